using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Registry.Probes;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// HTTP probes keep their connection to a target alive between probes, and that must not cost
/// what a probe is for: a target that stops answering is still removed, a probe that fails
/// leaves no connection behind, and a name that now resolves into a forbidden range is refused
/// even though a connection to its old, allowed address is pooled.
/// </summary>
public sealed class ProbeConnectionTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private const int Interval = 1;

    private static Dictionary<string, string?> Probing(string allowed = "127.0.0.0/8", string? lifetime = null)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Registry:Probes:AllowedNetworks:0"] = allowed,
            ["Registry:Probes:RefreshInterval"] = "00:00:00.200",
            ["Registry:Probes:TimeoutSeconds"] = "1",
            ["Registry:Membership:NodeTimeout"] = "00:00:01",
        };
        if (lifetime is not null)
        {
            settings["Registry:Probes:ConnectionLifetime"] = lifetime;
        }

        return settings;
    }

    [Fact]
    public async Task ProbesReuseOneConnectionAFailedProbeDropsItAndATargetThatStopsIsStillRemoved()
    {
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), Probing());
        using var client = node.CreateClient();
        await using var target = new ProbeTarget { KeepAlive = true };
        var hang = 0;
        target.Answer = _ => (200, "", Interlocked.Exchange(ref hang, 0) == 1 ? TimeSpan.FromSeconds(3) : TimeSpan.Zero);
        using (var response = await client.PostJsonAsync($"/v1/register?ttl=1&probe=http&probePath=/healthz&probeInterval={Interval}", Http.Provider("web", target.Addr)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await target.WaitUntilAsync(t => t.Requests.Count >= 3, TimeSpan.FromSeconds(15));
        Assert.Equal(1, target.Connections); // kept alive, body drained

        // One answer past the 1 s timeout: that probe fails, and the next one does not reuse
        // the connection the timed-out request was left on.
        var before = target.Requests.Count;
        Volatile.Write(ref hang, 1);
        await target.WaitUntilAsync(t => t.Requests.Count >= before + 3, TimeSpan.FromSeconds(15));
        Assert.Equal(2, target.Connections);

        var subscription = Http.Subscription(Http.Entry("web"));
        var (_, version, body) = await client.SubscribeAsync(subscription);
        Assert.Single(body!["endpoints"]!.AsArray()); // one failure did not evict it

        // The provider stops: no listener, its connections closed.
        var poll = client.SubscribeAsync(subscription, version, wait: 30);
        target.Close();
        target.CloseConnections();
        var (_, after, gone) = await poll.WaitAsync(TimeSpan.FromSeconds(15));

        Assert.NotEqual(version, after);
        Assert.Empty(gone!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task ATargetThatStopsAcceptingConnectionsIsRemovedEvenWhileItsPooledConnectionStillAnswers()
    {
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), Probing(lifetime: "00:00:02"));
        using var client = node.CreateClient();
        await using var target = new ProbeTarget { KeepAlive = true };
        using (var response = await client.PostJsonAsync($"/v1/register?ttl=1&probe=http&probeInterval={Interval}", Http.Provider("web", target.Addr)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await target.WaitUntilAsync(t => t.Requests.Count >= 2, TimeSpan.FromSeconds(15));
        var subscription = Http.Subscription(Http.Entry("web"));
        var (_, version, _) = await client.SubscribeAsync(subscription);

        // Listener gone, the kept connection still answers 200: once its lifetime is up the
        // probes need a new connection, which is refused.
        var poll = client.SubscribeAsync(subscription, version, wait: 30);
        var clock = Stopwatch.StartNew();
        target.Close();
        var (_, after, gone) = await poll.WaitAsync(TimeSpan.FromSeconds(20));

        Assert.NotEqual(version, after);
        Assert.Empty(gone!["endpoints"]!.AsArray());
        // The lifetime (2 s), three failures a second apart, one sweep.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2 + (3 * Interval) + 3), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task ANameThatNowResolvesIntoAForbiddenRangeIsRefusedThoughAConnectionToItsOldAddressIsPooled()
    {
        // Only 127.0.0.1 is allowed, so 127.0.0.2 is loopback that probes may not reach.
        var resolver = new SwitchingResolver("target.probe.test", IPAddress.Loopback);
        await using var registry = new RegistryNode(await Cluster.CreateDatabaseAsync(), Probing(allowed: "127.0.0.1/32"));
        await using var node = registry.WithWebHostBuilder(b => b.ConfigureTestServices(s => s.AddSingleton<ProbeHostResolver>(resolver)));
        using var client = node.CreateClient();
        await using var target = new ProbeTarget { KeepAlive = true };
        var addr = $"target.probe.test:{target.Port}";
        using (var response = await client.PostJsonAsync($"/v1/register?ttl=1&probe=http&probeInterval={Interval}", Http.Provider("web", addr)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await target.WaitUntilAsync(t => t.Requests.Count >= 2, TimeSpan.FromSeconds(15));
        Assert.Equal(1, target.Connections);
        var subscription = Http.Subscription(Http.Entry("web"));
        var (_, version, _) = await client.SubscribeAsync(subscription);

        var poll = client.SubscribeAsync(subscription, version, wait: 30);
        resolver.Answer = IPAddress.Parse("127.0.0.2");
        var requests = target.Requests.Count;
        var (_, after, gone) = await poll.WaitAsync(TimeSpan.FromSeconds(15));

        // Evicted by failed probes, none of which went over the pooled connection (one may
        // have been under way when the answer changed).
        Assert.NotEqual(version, after);
        Assert.Empty(gone!["endpoints"]!.AsArray());
        Assert.InRange(target.Requests.Count, requests, requests + 1);
        Assert.Equal(1, target.Connections);

        // And a new registration of that name is refused outright.
        using var refused = await client.PostJsonAsync($"/v1/register?probe=http", Http.Provider("other", addr));
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        Assert.Contains("loopback", await refused.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task NamesOnASilentDnsServerAreRefusedInTimeAndHoldNoMoreLookupsThanAllowed()
    {
        // Each lookup of a silent server holds a thread until the resolver gives up, whether or not anyone still waits.
        var silent = new SilentResolver();
        var settings = Probing(allowed: "127.0.0.1/32");
        settings["Registry:Probes:MaxConcurrentLookups"] = "2";
        await using var registry = new RegistryNode(await Cluster.CreateDatabaseAsync(), settings);
        await using var node = registry.WithWebHostBuilder(b => b.ConfigureTestServices(s => s.AddSingleton<ProbeHostResolver>(silent)));
        using var client = node.CreateClient();

        var registrations = Enumerable.Range(0, 3).Select(i => client.PostJsonAsync("/v1/register?probe=tcp", Http.Provider("web", $"silent-{i}.probe.test:80"))).ToList();
        var refused = await Task.WhenAll(registrations).WaitAsync(TimeSpan.FromSeconds(15));

        foreach (var response in refused)
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains(".probe.test did not resolve within", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            response.Dispose();
        }

        Assert.Equal(2, silent.Lookups);
    }

    /// <summary>
    /// Names registered on a DNS server that never answers hold their lookups' turns until the resolver gives up. Before,
    /// registrations and probes shared those turns: a flood of such registrations left none for the probes of the
    /// instances already registered by name, which then failed (and their instances were evicted).
    /// </summary>
    [Fact]
    public async Task RegistrationsOnASilentDnsServerHoldNoLookupAProbeNeeds()
    {
        await using var target = new ProbeTarget();
        var resolver = new SilentResolver { Answers = { ["db.probe.test"] = IPAddress.Loopback } };
        var settings = Probing(allowed: "127.0.0.1/32");
        settings["Registry:Probes:MaxConcurrentLookups"] = "2";
        await using var registry = new RegistryNode(await Cluster.CreateDatabaseAsync(), settings);
        await using var node = registry.WithWebHostBuilder(b => b.ConfigureTestServices(s => s.AddSingleton<ProbeHostResolver>(resolver)));
        using var client = node.CreateClient();
        var port = target.Addr[(target.Addr.LastIndexOf(':') + 1)..];
        using (var registered = await client.PostJsonAsync("/v1/register?probe=tcp&probeInterval=1", Http.Provider("db", $"db.probe.test:{port}", protocol: "tcp")))
        {
            Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
        }

        await target.WaitUntilAsync(t => t.Connections >= 1, TimeSpan.FromSeconds(10));
        var flood = await Task.WhenAll(Enumerable.Range(0, 3).Select(i => client.PostJsonAsync("/v1/register?probe=tcp", Http.Provider("web", $"silent-{i}.probe.test:80"))));
        Assert.All(flood, response => Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode));

        var before = target.Connections;
        await target.WaitUntilAsync(t => t.Connections >= before + 2, TimeSpan.FromSeconds(10));
    }

    /// <summary>A DNS server that never answers, under a lookup that does not stop when asked (a blocking getaddrinfo).</summary>
    private sealed class SilentResolver : ProbeHostResolver
    {
        private readonly TaskCompletionSource<IPAddress[]> _never = new();
        private int _lookups;

        /// <summary>The names that do resolve, and to what; none by default.</summary>
        public Dictionary<string, IPAddress> Answers { get; } = new(StringComparer.Ordinal);

        /// <summary>How many lookups of silent names were started.</summary>
        public int Lookups => Volatile.Read(ref _lookups);

        public override Task<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken)
        {
            if (Answers.TryGetValue(host, out var answer))
            {
                return Task.FromResult<IPAddress[]>([answer]);
            }

            Interlocked.Increment(ref _lookups);
            return _never.Task;
        }
    }

    /// <summary>A DNS name whose answer the test changes, as a rebinding attacker's would.</summary>
    private sealed class SwitchingResolver(string name, IPAddress answer) : ProbeHostResolver
    {
        public IPAddress Answer { get; set; } = answer;

        public override Task<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken) =>
            host == name ? Task.FromResult<IPAddress[]>([Answer]) : base.ResolveAsync(host, cancellationToken);
    }
}
