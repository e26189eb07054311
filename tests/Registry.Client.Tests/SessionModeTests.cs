using Registry.Client.Tests.Infrastructure;

namespace Registry.Client.Tests;

/// <summary>The client's session mode against real nodes: no heartbeats, failover when the holding node stops, removal on dispose.</summary>
public sealed class SessionModeTests(ClientFixture fixture) : ClientTest(fixture)
{
    [Fact]
    public async Task ASessionMovesToAnotherNodeWhenItsNodeStopsAndDisposingItRemovesTheInstance()
    {
        var first = RegistryServer.Start(Fixture.ConnectionString);
        var handler = new CountingHandler();
        var client = NewClient([first.Url, Fixture.Node.Url], handler, o => o.Ttl = TimeSpan.FromSeconds(10));
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:7101");
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry(instance.Application));

        var lease = await client.RegisterAsync(instance, RegistrationMode.Session);
        Assert.True(lease.IsRegistered);
        Assert.Equal(TimeSpan.FromSeconds(10), lease.Ttl);
        await subscription.WaitForAsync(a => a.Has(instance));
        Assert.Equal(first.Port, Assert.Single(handler.Requests).Uri.Port);

        // The holding node stops: its stream ends without "ended", the lease (10 s) runs on, and the
        // client opens the session on the other node.
        await first.DisposeAsync();
        await Eventually(() => handler.Requests.Any(r => r.Uri.AbsolutePath == "/v1/sessions" && r.Uri.Port == Fixture.Node.Port && r.Status == 200));
        await Eventually(() => lease.IsRegistered);
        Assert.True(subscription.Current!.Has(instance), "the instance went while its session moved");
        Assert.Equal(0, handler.Count("/v1/heartbeat"));

        await lease.DisposeAsync();
        await subscription.WaitForAsync(a => !a.Has(instance));
        Assert.Equal(RegistryConnectionState.Stopped, lease.State);
    }

    [Fact]
    public async Task ASessionReplacedByAnotherRegistrationStopsAndLeavesIt()
    {
        // A first session that timed out before its answer would be closed, and its instance removed, by the node:
        // give a cold node time to answer.
        var client = NewClient(configure: o => o.RequestTimeout = TimeSpan.FromSeconds(10));
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:7102");
        await using var subscription = await client.SubscribeAsync(new SubscriptionEntry(instance.Application));
        await using var lease = await client.RegisterAsync(instance, RegistrationMode.Session);
        await subscription.WaitForAsync(a => a.Has(instance));

        var other = new ProviderInstance(instance.Application, instance.Protocol, instance.Addr, new Dictionary<string, string> { ["owner"] = "someone else" });
        await using var takeover = await NewClient().RegisterAsync(other);

        await Eventually(() => lease.State == RegistryConnectionState.Replaced);
        Assert.False(lease.IsRegistered);
        var seen = await subscription.WaitForAsync(a => a.Endpoints.Any(e => e.Meta.ContainsKey("owner")));
        Assert.Single(seen.Endpoints);
    }
}
