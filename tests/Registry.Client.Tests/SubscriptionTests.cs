using Microsoft.Extensions.Logging;
using Registry.Client.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Registry.Client.Tests;

public sealed class SubscriptionTests(ClientFixture fixture, ITestOutputHelper output) : ClientTest(fixture)
{
    [Fact]
    public async Task ASubscriptionSeesRegistrationsAndExpiries()
    {
        var application = UniqueName();
        var a = new ProviderInstance(application, "http", "127.0.0.1:8001", new Dictionary<string, string> { ["tag"] = "read" });
        var b = new ProviderInstance(application, "http", "127.0.0.1:8002", new Dictionary<string, string> { ["tag"] = "write" });
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry(application, "http", new Dictionary<string, string> { ["tag"] = "read" }));
        var changes = new List<RegistryAnswerChangedEventArgs>();
        subscription.Changed += (_, e) => changes.Add(e);

        var empty = await subscription.WaitForFirstAnswerAsync().WaitAsync(Patience);
        Assert.Empty(empty.Endpoints);

        // Neither heartbeats: both leases run out after a second.
        await RegisterOnceAsync(a, ttlSeconds: 1);
        await RegisterOnceAsync(b, ttlSeconds: 1);
        var withA = await subscription.WaitForAsync(x => x.Has(a));
        Assert.False(withA.Has(b), "the meta filter let a non-matching instance through");

        var expired = await subscription.WaitForAsync(x => !x.Has(a));
        Assert.Empty(expired.Endpoints);
        Assert.Equal(empty.Version, expired.Version);
        Assert.Contains(changes, c => c.Current.Has(a) && c.Previous?.Version == empty.Version);
    }

    [Fact]
    public async Task WithEveryNodeStoppedTheSubscriptionKeepsItsAnswerAndResumesWhenANodeComesBack()
    {
        // The pace of retries during the outage is the unit tests' business (on a fake clock); this is the real-socket story.
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:8003");
        await RegisterOnceAsync(instance, ttlSeconds: 3600);
        var node = RegistryServer.Start(Fixture.ConnectionString);
        var handler = new CountingHandler();
        await using var subscription = await NewClient([node.Url], handler).SubscribeAsync(new SubscriptionEntry(instance.Application));
        var before = await subscription.WaitForAsync(a => a.Has(instance));
        var changes = 0;
        subscription.Changed += (_, _) => Interlocked.Increment(ref changes);

        await node.DisposeAsync();
        var outageStart = handler.Total;
        // A few failed retries, awaited as they happen: the third is sent only after the first two failed.
        await handler.WaitUntilAsync(h => h.Total - outageStart >= 3).WaitAsync(Patience);
        Assert.Equal(RegistryConnectionState.Unavailable, subscription.State);
        output.WriteLine($"{handler.Total - outageStart} requests into the outage");

        Assert.Same(before, subscription.Current);
        Assert.Equal(0, changes);
        Assert.IsType<RegistryUnavailableException>(subscription.LastError);
        var warnings = Logs.Entries.Count(e => e.Level >= LogLevel.Warning && e.Category.EndsWith(nameof(RegistrySubscription), StringComparison.Ordinal));
        Assert.Equal(1, warnings);

        // The node comes back on the same address; the next retry (at most one backoff cap away) finds it.
        await using var again = RegistryServer.Start(Fixture.ConnectionString, node.Port);
        var other = new ProviderInstance(instance.Application, "http", "127.0.0.1:8004");
        await RegisterOnceAsync(other, ttlSeconds: 3600);
        await subscription.WaitForAsync(a => a.Has(other));
        Assert.Equal(RegistryConnectionState.Connected, subscription.State);
        Assert.Contains(Logs.Entries, e => e.Message.Contains("reachable again", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A503WithRetryAfterIsRetriedUntilTheRegistryAnswers()
    {
        // How long the client waits after a Retry-After is asserted on a fake clock in the unit tests.
        var handler = new CountingHandler { UnavailablePathSuffix = "/v1/subscribe", RetryAfter = TimeSpan.FromMilliseconds(100) };
        await using var subscription = await NewClient(handler).SubscribeAsync(new SubscriptionEntry(UniqueName()));

        await handler.WaitUntilAsync(h => h.Count("/v1/subscribe") >= 2).WaitAsync(Patience);
        Assert.Null(subscription.Current);
        Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, Assert.IsType<RegistryUnavailableException>(subscription.LastError).StatusCode);

        handler.UnavailablePathSuffix = null;
        var first = await subscription.WaitForFirstAnswerAsync().WaitAsync(Patience);
        Assert.Empty(first.Endpoints);
    }

    [Fact]
    public async Task RequestsFailOverFromADeadUrlToALiveOne()
    {
        var dead = new Uri($"http://127.0.0.1:{RegistryServer.FreePort()}/");
        var handler = new CountingHandler();
        var client = NewClient([dead, Fixture.Node.Url], handler);
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:8005");

        await using var lease = await client.RegisterAsync(instance);
        Assert.True(lease.IsRegistered);
        await using var subscription = await client.SubscribeAsync(new SubscriptionEntry(instance.Application));
        await subscription.WaitForAsync(a => a.Has(instance));

        // The dead URL cost one failed connection; after that the client stays on the node that answered.
        Assert.Equal(1, handler.Requests.Count(r => r.Uri.Port == dead.Port));
        Assert.All(handler.Requests.Where(r => r.Uri.Port == Fixture.Node.Port), r => Assert.NotNull(r.Status));
    }

    [Fact]
    public async Task AConsumerStartingWhileTheRegistryIsDownBeginsFromTheCacheFile()
    {
        var cache = Directory.CreateTempSubdirectory("registry-client-cache-");
        try
        {
            var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:8006", new Dictionary<string, string> { ["cluster"] = "small" });
            await RegisterOnceAsync(instance, ttlSeconds: 3600);
            var entry = new SubscriptionEntry(instance.Application);
            RegistryAnswer known;
            string? file;
            await using (var warm = await NewClient(configure: o => o.CacheDirectory = cache.FullName).SubscribeAsync(entry))
            {
                known = await warm.WaitForAsync(a => a.Has(instance));
                file = warm.CacheFile;
            }

            // Written once the answer is taken; a dispose waits for the write.
            Assert.True(File.Exists(file));

            var dead = new Uri($"http://127.0.0.1:{RegistryServer.FreePort()}/");
            await using var cold = await NewClient([dead], configure: o => o.CacheDirectory = cache.FullName).SubscribeAsync(entry);

            var first = await cold.WaitForFirstAnswerAsync().WaitAsync(Patience);
            Assert.Equal(known.Version, first.Version);
            Assert.Equal("small", Assert.Single(first.Endpoints).Meta["cluster"]);
            Assert.Null(cold.LastContact);
        }
        finally
        {
            cache.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task ACorruptOrForeignCacheFileIsIgnoredWithAWarning()
    {
        var cache = Directory.CreateTempSubdirectory("registry-client-cache-");
        try
        {
            var dead = new Uri($"http://127.0.0.1:{RegistryServer.FreePort()}/");
            var entry = new SubscriptionEntry(UniqueName());
            string file;
            await using (var probe = await NewClient([dead], configure: o => o.CacheDirectory = cache.FullName).SubscribeAsync(entry))
            {
                file = probe.CacheFile!;
            }

            await File.WriteAllTextAsync(file, "{\"format\":\"registry-client-cache/1\",\"answer\":");
            await using (var corrupt = await NewClient([dead], configure: o => o.CacheDirectory = cache.FullName).SubscribeAsync(entry))
            {
                Assert.Null(corrupt.Current);
            }

            // A well-formed file that belongs to another subscription.
            await File.WriteAllTextAsync(file, """
                {"format":"registry-client-cache/1",
                 "subscription":{"subscribes":[{"provider":"someone-else"}]},
                 "answer":{"version":"v1","endpoints":[{"application":"someone-else","protocol":"http","addr":"10.0.0.1:80","meta":{}}]}}
                """);
            await using (var foreign = await NewClient([dead], configure: o => o.CacheDirectory = cache.FullName).SubscribeAsync(entry))
            {
                Assert.Null(foreign.Current);
            }

            var ignored = Logs.Entries.Where(e => e.Level == LogLevel.Warning && e.Message.StartsWith("Ignoring the cache file", StringComparison.Ordinal)).ToList();
            Assert.Equal(2, ignored.Count);
            Assert.Contains("another subscription", ignored[1].Message, StringComparison.Ordinal);
        }
        finally
        {
            cache.Delete(recursive: true);
        }
    }
}
