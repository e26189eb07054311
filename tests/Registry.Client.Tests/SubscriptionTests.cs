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
    public async Task WithEveryNodeStoppedTheSubscriptionKeepsItsAnswerAndSendsAboutOneRequestPerBackoffCap()
    {
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:8003");
        await RegisterOnceAsync(instance, ttlSeconds: 3600);
        var node = RegistryServer.Start(Fixture.ConnectionString);
        var handler = new CountingHandler();
        var cap = TimeSpan.FromMilliseconds(500);
        await using var subscription = await NewClient([node.Url], handler, o => o.RetryMaxDelay = cap).SubscribeAsync(new SubscriptionEntry(instance.Application));
        var before = await subscription.WaitForAsync(a => a.Has(instance));
        var changes = 0;
        subscription.Changed += (_, _) => Interlocked.Increment(ref changes);

        await node.DisposeAsync();
        var outageStart = handler.Total;
        var outageBegan = DateTimeOffset.UtcNow;
        // This test is about time: how often the client knocks on a dead registry.
        var outage = TimeSpan.FromSeconds(3);
        await Task.Delay(outage);
        var sent = handler.Total - outageStart;
        output.WriteLine($"{sent} requests in a {outage.TotalSeconds} s outage with a {cap.TotalMilliseconds} ms cap");

        Assert.Same(before, subscription.Current);
        Assert.Equal(0, changes);
        // The backoff ramps up from 50 ms (about 50+100+200+400 ms) and then holds near the cap
        // (jitter may cut a delay short, so the bound allows delays averaging half the cap).
        var bound = (int)(outage / (cap / 2)) + 6;
        Assert.InRange(sent, 2, bound);
        // Once the ramp is over (well within 1.5 s) the delays stay near the cap. Decorrelated
        // jitter may draw one short delay now and then, so the bound is on their average: at
        // least half a cap (retrying at the 50 ms base delay would send about thirty).
        var lateWindow = TimeSpan.FromSeconds(1.5);
        var late = handler.Requests.Count(r => r.At >= outageBegan + outage - lateWindow && r.At < outageBegan + outage);
        Assert.True(late <= (int)(lateWindow / (cap / 2)) + 1, $"{late} requests in the last {lateWindow.TotalSeconds} s of the outage");
        var warnings = Logs.Entries.Count(e => e.Level >= LogLevel.Warning && e.Category.EndsWith(nameof(RegistrySubscription), StringComparison.Ordinal));
        Assert.Equal(1, warnings);

        // The node comes back on the same address; the next retry (at most one cap away) finds it.
        await using var again = RegistryServer.Start(Fixture.ConnectionString, node.Port);
        var other = new ProviderInstance(instance.Application, "http", "127.0.0.1:8004");
        var back = DateTimeOffset.UtcNow;
        await RegisterOnceAsync(other, ttlSeconds: 3600);
        await subscription.WaitForAsync(a => a.Has(other), cap + TimeSpan.FromSeconds(3));
        var firstAnswered = handler.Requests.First(r => r.At >= back && r.Status == 200).At;
        output.WriteLine($"resumed {(firstAnswered - back).TotalMilliseconds:F0} ms after the node came back");
        Assert.True(firstAnswered - back <= cap + TimeSpan.FromSeconds(1), $"resumed after {firstAnswered - back}");
        Assert.Contains(Logs.Entries, e => e.Message.Contains("reachable again", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A503WithRetryAfterIsHonouredAboveTheBackoffCap()
    {
        var handler = new CountingHandler { UnavailablePathSuffix = "/v1/subscribe", RetryAfter = TimeSpan.FromSeconds(1) };
        await using var subscription = await NewClient(handler, o => o.RetryMaxDelay = TimeSpan.FromMilliseconds(200))
            .SubscribeAsync(new SubscriptionEntry(UniqueName()));

        // This test is about time: the registry asked for a second between attempts, five times the cap.
        using (var deadline = new CancellationTokenSource(Patience))
        {
            while (handler.Count("/v1/subscribe") < 3)
            {
                await Task.Delay(20, deadline.Token);
            }
        }

        var attempts = handler.Requests.Select(r => r.At).Order().ToList();
        Assert.All(attempts.Zip(attempts.Skip(1)), pair => Assert.True(pair.Second - pair.First >= TimeSpan.FromSeconds(0.95), $"two attempts {pair.Second - pair.First} apart"));
        Assert.Null(subscription.Current);

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
