using Registry.Client.Tests.Infrastructure;

namespace Registry.Client.Tests;

public sealed class RegistrationTests(ClientFixture fixture) : ClientTest(fixture)
{
    [Fact]
    public async Task ALeaseHeartbeatsPastItsTtlAndDisposingItUnregisters()
    {
        var handler = new CountingHandler();
        // Two seconds rather than one: room for a busy CI machine to be late with a heartbeat without the lease running out.
        var client = NewClient(handler, o => o.Ttl = TimeSpan.FromSeconds(2));
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:7001", new Dictionary<string, string> { ["idc"] = "shanghai" });
        await using var subscription = await client.SubscribeAsync(new SubscriptionEntry(instance.Application));

        var lease = await client.RegisterAsync(instance);
        Assert.True(lease.IsRegistered);
        Assert.Equal(TimeSpan.FromSeconds(2), lease.Ttl);
        var seen = await subscription.WaitForAsync(a => a.Has(instance));
        Assert.Equal("shanghai", Assert.Single(seen.Endpoints).Meta["idc"]);

        // Four heartbeats at about TTL/3 span more than the TTL: without them the sweeper would have removed it.
        await handler.WaitUntilAsync(h => h.Count("/v1/heartbeat") >= 4).WaitAsync(Patience);
        Assert.True(subscription.Current!.Has(instance), "the instance expired although the lease heartbeated");
        Assert.All(handler.Requests.Where(r => r.Uri.AbsolutePath == "/v1/heartbeat"), r => Assert.Equal(200, r.Status));

        await lease.DisposeAsync();
        Assert.False(lease.IsRegistered);
        await subscription.WaitForAsync(a => !a.Has(instance));
        Assert.Equal(1, handler.Count("/v1/unregister"));
    }

    [Fact]
    public async Task ALeaseTheRegistryForgotRegistersAgain()
    {
        var handler = new CountingHandler();
        var client = NewClient(handler);
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:7002");
        await using var subscription = await client.SubscribeAsync(new SubscriptionEntry(instance.Application));
        await using var lease = await client.RegisterAsync(instance);
        await subscription.WaitForAsync(a => a.Has(instance));

        // Heartbeats lost on the way: the registry lets the lease run out.
        handler.FailPathSuffix = "/v1/heartbeat";
        await subscription.WaitForAsync(a => !a.Has(instance));

        // They get through again: 404, so the lease registers again by itself.
        handler.FailPathSuffix = null;
        await subscription.WaitForAsync(a => a.Has(instance));
        Assert.Contains(handler.Requests, r => r.Uri.AbsolutePath == "/v1/heartbeat" && r.Status == 404);
        Assert.True(handler.Count("/v1/register") >= 2);
        Assert.Contains(Logs.Entries, e => e.Message.Contains("does not know", StringComparison.Ordinal));
    }

    [Fact]
    public async Task InvalidInputIsRefusedAtOnceWithTheRegistrysReason()
    {
        var client = NewClient();
        var error = await Assert.ThrowsAsync<RegistryClientException>(() => client.RegisterAsync(new ProviderInstance(UniqueName(), "http", "not an address")));
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, error.StatusCode);
        Assert.Contains("addr", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ALeaseStartedWhileTheRegistryIsDownRegistersWhenANodeComesUp()
    {
        var port = RegistryServer.FreePort();
        var client = NewClient([new Uri($"http://127.0.0.1:{port}/")]);
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:7003");

        await using var lease = await client.RegisterAsync(instance);
        Assert.False(lease.IsRegistered);

        await using var node = RegistryServer.Start(Fixture.ConnectionString, port);
        await Eventually(() => lease.IsRegistered);
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry(instance.Application));
        await subscription.WaitForAsync(a => a.Has(instance));
    }

    [Fact]
    public void InvalidOptionsAreRejectedWithEveryReason()
    {
        var options = new RegistryClientOptions { Ttl = TimeSpan.FromMilliseconds(10), PollWait = TimeSpan.FromMinutes(5) };
        options.Servers.Add(new Uri("ftp://registry/"));
        using var http = new HttpClient();
        var error = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => new RegistryClient(http, options));
        Assert.Contains(error.Failures, f => f.StartsWith("Servers:", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.StartsWith("Ttl:", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.StartsWith("PollWait:", StringComparison.Ordinal));
    }
}
