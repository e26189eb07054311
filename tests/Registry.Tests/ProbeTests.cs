using System.Diagnostics;
using System.Net;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Membership;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// Registry probes against real targets on loopback: healthy ones are kept alive without a
/// heartbeat, failing ones evicted and their subscribers woken, redirects never followed,
/// the SSRF rules enforced at registration, and each instance probed by exactly one node.
/// Each test runs its own nodes on a database of its own (probes evict through the sweeper).
/// </summary>
public sealed class ProbeTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private const int Interval = 1;

    /// <summary>Probing on for loopback, listed explicitly as the rules require; membership read fast.</summary>
    private static readonly Dictionary<string, string?> Probing = new()
    {
        ["Registry:Probes:AllowedNetworks:0"] = "127.0.0.0/8",
        ["Registry:Probes:RefreshInterval"] = "00:00:00.200",
        ["Registry:Probes:TimeoutSeconds"] = "1",
    };

    [Fact]
    public async Task AnHttpTargetThatTurnsUnhealthyIsRemovedAfterFailuresToEvictIntervalsAndItsSubscribersWoken()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, Probing);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        var healthy = true;
        target.Answer = _ => (healthy ? 200 : 503, "", TimeSpan.Zero);

        int granted;
        using (var response = await client.PostJsonAsync($"/v1/register?ttl=1&probe=http&probePath=/healthz&probeInterval={Interval}", Http.Provider("web", target.Addr)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
            var lease = await response.ReadJsonAsync();
            Assert.Equal("http", (string?)lease["probe"]!["kind"]);
            Assert.Equal("/healthz", (string?)lease["probe"]!["path"]);
            Assert.Equal(Interval, (int)lease["probe"]!["interval"]!);
            // Long enough, whatever ttl asked for, that two failed probes (FailuresToEvict - 1) never let it run
            // out, and that half of it outlasts the move of a dead prober's share: NodeTimeout, two reads of the
            // live nodes and two intervals (before, 2 × (3 + 1) intervals alone: 8 s, against a 6–7 s move).
            granted = (int)lease["ttl"]!;
            var membership = node.Get<IOptions<MembershipOptions>>().Value;
            Assert.True(granted >= 2 * (3 + 1) * Interval, $"lease {granted} s");
            Assert.True(granted / 2.0 >= (membership.NodeTimeout + 2 * membership.RefreshInterval).TotalSeconds + 2 * Interval, $"lease {granted} s");
            // And that of a prober cut off from it: an interval since its last pass, one and a timeout to fail, another
            // node's mark and a read of it, its own mark and the others' reads (a read apart), the next prober's first
            // probe and its write, three judgements and a second of slack (before: 14 s, against 11 s).
            var leases = node.Get<IOptions<Registry.Leases.LeaseOptions>>().Value;
            var timeout = node.Get<IOptions<Registry.Probes.ProbeOptions>>().Value.TimeoutSeconds;
            Assert.True(
                granted / 2.0 >= (3 * Interval) + timeout + (2 * leases.LivenessInterval.TotalSeconds) + (3 * membership.RefreshInterval.TotalSeconds)
                    + 0.75 + leases.RenewalInterval.TotalSeconds + 1,
                $"lease {granted} s");
        }

        // Passing probes alone keep it: past its lease, with no heartbeat.
        await target.WaitUntilAsync(t => t.Requests.Count >= granted + 2, TimeSpan.FromSeconds(granted + 15));
        Assert.All(target.Requests, r => Assert.Equal("/healthz", r.Path));
        var subscription = Http.Subscription(Http.Entry("web"));
        var (_, version, body) = await client.SubscribeAsync(subscription);
        Assert.Equal(target.Addr, (string?)Assert.Single(body!["endpoints"]!.AsArray())!["addr"]);

        var poll = client.SubscribeAsync(subscription, version, wait: 30);
        var clock = Stopwatch.StartNew();
        healthy = false;
        var (_, after, gone) = await poll.WaitAsync(TimeSpan.FromSeconds(15));

        Assert.NotEqual(version, after);
        Assert.Empty(gone!["endpoints"]!.AsArray());
        // Three failures a second apart (the first may come at once), then one sweep.
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(2 * Interval) - TimeSpan.FromMilliseconds(100), $"took only {clock.Elapsed}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(3 * Interval + 3), $"took {clock.Elapsed}");
        Assert.Equal(1, await EvictedAsync(database)); // counted for self-preservation
    }

    [Fact]
    public async Task FewerFailedProbesInARowThanFailuresToEvictNeverEvictWhateverTheirPhase()
    {
        // Two passes, two failures, over and over. The passes renew the lease as heartbeats do,
        // written only once less than half of it is left, so one of two passes in a row skips
        // its write; whichever it is, the lease must outlast the two failures after it.
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, Probing);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        var answered = 0;
        target.Answer = _ => (Interlocked.Increment(ref answered) % 4 is 1 or 2 ? 200 : 503, "", TimeSpan.Zero);
        using (var response = await client.PostJsonAsync($"/v1/register?ttl=1&probe=http&probeInterval={Interval}", Http.Provider("web", target.Addr)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        var subscription = Http.Subscription(Http.Entry("web"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        await target.WaitUntilAsync(t => t.Requests.Count >= 16, TimeSpan.FromSeconds(30));

        var (_, after, body) = await client.SubscribeAsync(subscription);
        Assert.Equal(version, after);
        Assert.Single(body!["endpoints"]!.AsArray());
        Assert.Equal(0, await EvictedAsync(database));
    }

    [Fact]
    public async Task FailedProbesBeforeARegistrationDoNotCountAgainstIt()
    {
        // The provider restarts: two probes fail, it registers again (the same spec), and it is
        // still failing. Its new registration gets FailuresToEvict probes of its own.
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), Probing);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        target.Answer = _ => (503, "", TimeSpan.Zero);
        using var failed = MeterWatch.Node(node, "registry.probes", "result", "failed");
        using var ended = MeterWatch.Node(node, "registry.probes.evictions");
        await RegisterProbedAsync(client, target, HttpStatusCode.Created);

        await failed.WaitForAsync(2, TimeSpan.FromSeconds(10));
        await RegisterProbedAsync(client, target, HttpStatusCode.OK);

        await ended.WaitForAsync(1, TimeSpan.FromSeconds(15));
        Assert.True(failed.Total >= 2 + 3, $"the lease was ended after {failed.Total} failed probes");
    }

    [Fact]
    public async Task ALeaseEndedByProbesThenRegisteredAgainIsEndedAgainByItsOwnFailures()
    {
        // Self-preservation holds the ended lease back (one instance of one is a mass expiry
        // when the minimum is 0), so the provider registers again before it is evicted.
        var settings = new Dictionary<string, string?>(Probing) { ["Registry:Leases:SelfPreservationMinInstances"] = "0" };
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), settings);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        target.Answer = _ => (503, "", TimeSpan.Zero);
        using var ended = MeterWatch.Node(node, "registry.probes.evictions");
        await RegisterProbedAsync(client, target, HttpStatusCode.Created);

        await ended.WaitForAsync(1, TimeSpan.FromSeconds(10));
        await RegisterProbedAsync(client, target, HttpStatusCode.OK);

        await ended.WaitForAsync(2, TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task ALeaseEndedByProbesIsWrittenAgainByTheNodeThatTakesItOverWhenItsProbesPass()
    {
        // Self-preservation holds the ended lease back (one instance of one), the target recovers
        // and its prober stops. The node that takes the instance over knows only the expiry of the
        // registration, far off (ending a lease changes nothing the change feed carries): its
        // passing probes must write the lease anyway, or it stays ended and the sweeper evicts a
        // healthy instance once the hold is released.
        var settings = new Dictionary<string, string?>(Probing) { ["Registry:Leases:SelfPreservationMinInstances"] = "0" };
        var database = await Cluster.CreateDatabaseAsync();
        await using var nodes = await StartedNodes.StartAsync(database, settings, settings);
        await using var target = new ProbeTarget();
        target.Answer = _ => (503, "", TimeSpan.Zero);
        using var client = nodes[0].CreateClient();
        // A long lease: half of it, when a renewal would be written anyway, is a minute away.
        using (var response = await client.PostJsonAsync($"/v1/register?ttl=120&probe=http&probeInterval={Interval}", Http.Provider("web", target.Addr)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await target.WaitUntilAsync(t => t.Requests.Count >= 1, TimeSpan.FromSeconds(10));
        var prober = nodes.Single(n => n.Get<NodeIdentity>().Id == target.Requests[0].Node);
        var heir = nodes.Single(n => n != prober);
        using (var ended = MeterWatch.Node(prober, "registry.probes.evictions"))
        {
            await ended.WaitForAsync(1, TimeSpan.FromSeconds(10));
        }

        Assert.False(await LeaseRunsAsync(database), "the lease was not ended");
        using var written = MeterWatch.Node(heir, "registry.heartbeats.written");
        target.Answer = _ => (200, "", TimeSpan.Zero);
        await prober.DisposeAsync();

        var heirId = heir.Get<NodeIdentity>().Id;
        await target.WaitUntilAsync(t => t.Requests.Count(r => r.Node == heirId) >= 2, TimeSpan.FromSeconds(15));
        await written.WaitForAsync(1, TimeSpan.FromSeconds(5));
        Assert.True(await LeaseRunsAsync(database), "the lease is still ended");
        Assert.Equal(0, await EvictedAsync(database));
    }

    /// <summary>Whether the lease of the one instance runs in the database now.</summary>
    private static async Task<bool> LeaseRunsAsync(string database)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT expires_at > now() FROM instances", connection);
        return (bool)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>Registers <paramref name="count"/> applications <c>{prefix}{i}</c> at the target, each probed over HTTP at <c>/{prefix}{i}</c> every interval.</summary>
    private static async Task RegisterProbedAppsAsync(HttpClient client, ProbeTarget target, int count, string prefix = "app")
    {
        for (var i = 0; i < count; i++)
        {
            using var response = await client.PostJsonAsync($"/v1/register?probe=http&probePath=/{prefix}{i}&probeInterval={Interval}", Http.Provider($"{prefix}{i}", target.Addr));
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }
    }

    /// <summary>The instances sweeps have evicted (what self-preservation counts).</summary>
    private static async Task<int> EvictedAsync(string database)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var evictions = new NpgsqlCommand("SELECT coalesce(sum(instances), 0)::int FROM evictions", connection);
        return (int)(await evictions.ExecuteScalarAsync())!;
    }

    /// <summary>Registers "web" at the target, probed over HTTP every interval, and expects <paramref name="status"/>.</summary>
    private static async Task RegisterProbedAsync(HttpClient client, ProbeTarget target, HttpStatusCode status)
    {
        using var response = await client.PostJsonAsync($"/v1/register?probe=http&probeInterval={Interval}", Http.Provider("web", target.Addr));
        Assert.Equal(status, response.StatusCode);
    }

    [Fact]
    public async Task ATcpTargetThatClosesIsRemoved()
    {
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), Probing);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        using (var response = await client.PostJsonAsync($"/v1/register?probe=tcp&probeInterval={Interval}", Http.Provider("db", target.Addr, protocol: "tcp")))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
            var probe = (await response.ReadJsonAsync())["probe"]!;
            Assert.Equal("tcp", (string?)probe["kind"]);
            Assert.Null(probe["path"]);
        }

        await target.WaitUntilAsync(t => t.Connections >= 2, TimeSpan.FromSeconds(10));
        Assert.Empty(target.Requests); // connected, sent nothing
        var subscription = Http.Subscription(Http.Entry("db"));
        var (_, version, _) = await client.SubscribeAsync(subscription);

        target.Close();
        var (_, after, gone) = await client.SubscribeAsync(subscription, version, wait: 30).WaitAsync(TimeSpan.FromSeconds(15));

        Assert.NotEqual(version, after);
        Assert.Empty(gone!["endpoints"]!.AsArray());
    }

    /// <summary>
    /// A probe registered with a registry token, which is then revoked (leaked, say): before, passing probes kept the
    /// instance registered for as long as its port answered, with nothing checking a credential. Only a valid
    /// credential keeps an instance registered: it is probed no more and its lease ends.
    /// </summary>
    [Fact]
    public async Task AProbedInstanceGoesWhenTheTokenThatRegisteredItIsRevoked()
    {
        var bootstrap = "bootstrap-" + Guid.NewGuid().ToString("N");
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), new Dictionary<string, string?>(Probing)
        {
            ["Registry:Auth:Mode"] = "Required",
            ["Registry:Auth:BootstrapToken"] = bootstrap,
        });
        using var admin = node.CreateClient();
        admin.DefaultRequestHeaders.Authorization = new("Bearer", bootstrap);
        using var created = await admin.PostJsonAsync("/v1/tokens", """{"description":"db deploys","register":["db"]}""");
        var token = await created.ReadJsonAsync();
        using var deployer = node.CreateClient();
        deployer.DefaultRequestHeaders.Authorization = new("Bearer", (string)token["token"]!);
        await using var target = new ProbeTarget();
        using (var response = await deployer.PostJsonAsync($"/v1/register?probe=tcp&probeInterval={Interval}", Http.Provider("db", target.Addr, protocol: "tcp")))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await target.WaitUntilAsync(t => t.Connections >= 2, TimeSpan.FromSeconds(10));
        var subscription = Http.Subscription(Http.Entry("db"));
        var (_, version, _) = await admin.SubscribeAsync(subscription);

        using (var revoked = await admin.DeleteAsync(new Uri($"/v1/tokens/{(string)token["id"]!}", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.NoContent, revoked.StatusCode);
        }

        var (_, after, gone) = await admin.SubscribeAsync(subscription, version, wait: 30).WaitAsync(TimeSpan.FromSeconds(15));
        Assert.NotEqual(version, after);
        Assert.Empty(gone!["endpoints"]!.AsArray());
    }

    /// <summary>
    /// The probed instances are read every RefreshInterval. Before, that read ran in the scheduling loop itself: one held
    /// at a lock (an operator's ALTER TABLE on instances), or by a database that does not answer, started no probe of
    /// the node's share until it returned, up to the command timeout each time.
    /// </summary>
    [Fact]
    public async Task AReadOfTheProbedInstancesHeldAtALockStopsNoProbe()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, Probing);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        using (var response = await client.PostJsonAsync($"/v1/register?probe=tcp&probeInterval={Interval}", Http.Provider("db", target.Addr, protocol: "tcp")))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await target.WaitUntilAsync(t => t.Connections >= 2, TimeSpan.FromSeconds(10));
        await using var locker = new NpgsqlConnection(database);
        await locker.OpenAsync();
        await using var locked = await locker.BeginTransactionAsync();
        await using (var lockTable = new NpgsqlCommand("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE", locker, locked))
        {
            await lockTable.ExecuteNonQueryAsync();
        }

        await Backends.WaitingForALockAsync(database, "SELECT coalesce(bit_xor(hashtextextended%");
        var held = target.Connections;
        await target.WaitUntilAsync(t => t.Connections >= held + 3, TimeSpan.FromSeconds(3 * Interval + 5));
        await locked.RollbackAsync();
    }

    /// <summary>
    /// A node cut off from the database cannot mark itself, so the others count it gone after NodeTimeout and probe its
    /// share. Before, it went on probing that share beside them for as long as the cut lasted, on the last membership
    /// it had read (and could write none of it).
    /// </summary>
    [Fact]
    public async Task ANodeCutOffFromTheDatabaseStopsProbingOnceTheOthersCountItGone()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var proxy = new TcpProxy(database);
        await using var node = new RegistryNode(proxy.ConnectionString, Probing);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        using (var response = await client.PostJsonAsync($"/v1/register?probe=tcp&probeInterval={Interval}", Http.Provider("db", target.Addr, protocol: "tcp")))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await target.WaitUntilAsync(t => t.Connections >= 2, TimeSpan.FromSeconds(10));
        await proxy.CutAsync();

        // Its membership reads fail from now on: past a refresh and NodeTimeout (1 s + 3 s), it owns nothing.
        var membership = node.Get<IOptions<MembershipOptions>>().Value;
        var quietFor = TimeSpan.FromSeconds(2.5 * Interval);
        var deadline = Stopwatch.StartNew();
        var (seen, since) = (target.Connections, Stopwatch.StartNew());
        while (since.Elapsed < quietFor)
        {
            Assert.True(
                deadline.Elapsed < membership.RefreshInterval + membership.NodeTimeout + quietFor + TimeSpan.FromSeconds(5),
                $"still probed {deadline.Elapsed} after the cut ({target.Connections} connections)");
            await Task.Delay(100);
            if (target.Connections != seen)
            {
                (seen, since) = (target.Connections, Stopwatch.StartNew());
            }
        }
    }

    [Fact]
    public async Task ATargetThatRedirectsOrAnswersSlowlyFailsAndTheRedirectIsNeverFollowed()
    {
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), Probing);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        target.Answer = path => path switch
        {
            "/moved" => (302, $"Location: http://{target.Addr}/elsewhere\r\n", TimeSpan.Zero),
            "/slow" => (200, "", TimeSpan.FromSeconds(5)), // past the 1 s timeout
            _ => (200, "", TimeSpan.Zero),
        };
        foreach (var (application, path) in new[] { ("redirects", "/moved"), ("slow", "/slow") })
        {
            using var response = await client.PostJsonAsync($"/v1/register?probe=http&probePath={path}&probeInterval={Interval}", Http.Provider(application, target.Addr));
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        var subscription = Http.Subscription(Http.Entry("redirects"), Http.Entry("slow"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var (_, after, body) = await client.SubscribeAsync(subscription, version, wait: 30).WaitAsync(TimeSpan.FromSeconds(20));
            version = after;
            if (body!["endpoints"]!.AsArray().Count == 0)
            {
                break;
            }
        }

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"took {clock.Elapsed}");
        Assert.Contains(target.Requests, r => r.Path == "/moved");
        Assert.Contains(target.Requests, r => r.Path == "/slow");
        Assert.DoesNotContain(target.Requests, r => r.Path == "/elsewhere");
    }

    [Fact]
    public async Task AProbeRegistrationOutsideTheAllowedNetworksIsRefusedNamingTheRule()
    {
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), new Dictionary<string, string?>
        {
            ["Registry:Probes:AllowedNetworks:0"] = "10.0.0.0/8",
            ["Registry:Probes:AllowedNetworks:1"] = "0.0.0.0/0",
        });
        using var client = node.CreateClient();

        // A DNS name is resolved: localhost lies in loopback, which 0.0.0.0/0 does not open.
        var local = await RefusedAsync(client, "/v1/register?probe=http", Http.Provider("web", "localhost:8080"));
        Assert.Contains("localhost resolves to", local, StringComparison.Ordinal);
        Assert.Contains("loopback", local, StringComparison.Ordinal);
        var metadata = await RefusedAsync(client, "/v1/register?probe=http", Http.Provider("web", "169.254.169.254:80"));
        Assert.Contains("link-local", metadata, StringComparison.Ordinal);

        // The fixture's node probes only loopback, listed explicitly.
        await using var loopbackOnly = new RegistryNode(await Cluster.CreateDatabaseAsync(), Probing);
        using var loopbackClient = loopbackOnly.CreateClient();
        var outside = await RefusedAsync(loopbackClient, "/v1/register?probe=tcp", Http.Provider("web", "10.1.2.3:80"));
        Assert.Contains("outside Registry:Probes:AllowedNetworks", outside, StringComparison.Ordinal);

        // Without AllowedNetworks probing is off.
        var off = await RefusedAsync(Client, "/v1/register?probe=http", Http.Provider("web", "10.1.2.3:80"), field: "probe");
        Assert.Contains("AllowedNetworks", off, StringComparison.Ordinal);
        await RefusedAsync(loopbackClient, "/v1/register?probe=ftp", Http.Provider("web", "127.0.0.1:80"), field: "probe");
        await RefusedAsync(loopbackClient, "/v1/register?probe=http&probePath=//evil.example/", Http.Provider("web", "127.0.0.1:80"), field: "probePath");
        await RefusedAsync(loopbackClient, "/v1/register?probePath=/healthz", Http.Provider("web", "127.0.0.1:80"), field: "probePath");
        await RefusedAsync(loopbackClient, "/v1/register?probe=tcp&probeInterval=0", Http.Provider("web", "127.0.0.1:80"), field: "probeInterval");
        using var services = await Client.GetAsync(new Uri("/v1/services", UriKind.Relative));
        Assert.DoesNotContain("web", await services.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("[fd00:ec2::23]:80", "cloud metadata")] // EKS Pod Identity over IPv6
    [InlineData("[fd20:ce::254]:80", "cloud metadata")] // GCP's metadata server over IPv6
    [InlineData("168.63.129.16:80", "cloud metadata")] // Azure's WireServer
    [InlineData("169.254.170.23:80", "cloud metadata")] // EKS Pod Identity
    [InlineData("[64:ff9b::a9fe:a9fe]:80", "carries 169.254.169.254")] // NAT64 of the metadata endpoint
    [InlineData("[2002:7f00:1::]:80", "carries 127.0.0.1")] // 6to4 of loopback
    [InlineData("[::7f00:1]:80", "carries 127.0.0.1")] // IPv4-compatible loopback
    public async Task SensitiveAddressesStayRefusedWhenBroadNetworksAndLinkLocalAreAllowed(string addr, string reason)
    {
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), new Dictionary<string, string?>
        {
            ["Registry:Probes:AllowedNetworks:0"] = "0.0.0.0/0",
            ["Registry:Probes:AllowedNetworks:1"] = "::/0",
            ["Registry:Probes:AllowedNetworks:2"] = "169.254.0.0/16",
            ["Registry:Probes:AllowedNetworks:3"] = "fd00::/8",
        });
        using var client = node.CreateClient();

        var refused = await RefusedAsync(client, "/v1/register?probe=tcp", Http.Provider("web", addr));

        Assert.Contains(reason, refused, StringComparison.Ordinal);
        // What those networks do open: NAT64 of a private address, a link-local neighbour.
        foreach (var open in new[] { "[64:ff9b::a00:1]:80", "169.254.10.1:80" })
        {
            using var accepted = await client.PostJsonAsync("/v1/register?probe=tcp&probeInterval=60", Http.Provider("web", open));
            Assert.Equal(HttpStatusCode.Created, accepted.StatusCode);
        }
    }

    [Fact]
    public async Task RegisteringAgainWithoutAProbeTurnsProbingOff()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, Probing);
        using var client = node.CreateClient();
        await using var target = new ProbeTarget();
        using (var response = await client.PostJsonAsync("/v1/register?probe=tcp", Http.Provider("db", target.Addr)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        using (var response = await client.PostJsonAsync("/v1/register", Http.Provider("db", target.Addr)))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Null((await response.ReadJsonAsync())["probe"]);
        }

        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var probed = new NpgsqlCommand("SELECT count(*)::int FROM instances WHERE probe_kind IS NOT NULL", connection);
        Assert.Equal(0, (int)(await probed.ExecuteScalarAsync())!);
    }

    [Fact]
    public async Task WithStartedNodesEachInstanceIsProbedByExactlyOneAndAStoppedNodesShareMovesWithinTwoIntervals()
    {
        var database = await Cluster.CreateDatabaseAsync();
        var nodes = new List<RegistryNode>();
        await using var target = new ProbeTarget();
        // Nodes announce joining and leaving, and the others read the live nodes at once: no periodic read
        // (a second apart by default, which alone took the move past two intervals now and then) comes into it.
        var settings = new Dictionary<string, string?>(Probing) { ["Registry:Membership:RefreshInterval"] = "00:01:00" };
        try
        {
            for (var i = 0; i < 3; i++)
            {
                nodes.Add(new RegistryNode(database, settings));
                _ = nodes[i].Server;
            }

            // Every node sees all three before anything is registered, so ownership is settled.
            await Task.WhenAll(nodes.Select(n => WaitAsync(() => n.Get<LiveNodes>().Current.Count == 3)));
            using var views = new MembershipViews(nodes);
            using var client = nodes[0].CreateClient();
            const int instances = 12;
            await RegisterProbedAppsAsync(client, target, instances);

            await target.WaitUntilAsync(t => Enumerable.Range(0, instances).All(i => t.Requests.Count(r => r.Path == $"/app{i}") >= 3), TimeSpan.FromSeconds(20));
            var probers = target.Requests.GroupBy(r => r.Path).ToDictionary(g => g.Key, g => g.Select(r => r.Node).Distinct().ToList());
            Assert.True(probers.Values.All(p => p.Count == 1), $"probed by more than one node: {target.Describe()}; membership seen: {views}");
            var owners = probers.ToDictionary(p => p.Key, p => p.Value[0]);
            Assert.Equal(instances, owners.Count);
            Assert.True(owners.Values.Distinct().Count() >= 2, "one node took every instance");

            // Stop the node that probes the most; its instances move to the other two.
            var busiest = owners.Values.GroupBy(n => n).MaxBy(g => g.Count())!.Key;
            var stopped = nodes.Single(n => n.Get<NodeIdentity>().Id == busiest);
            var moving = owners.Where(o => o.Value == busiest).Select(o => o.Key).ToList();
            await stopped.DisposeAsync();
            nodes.Remove(stopped);
            var clock = Stopwatch.StartNew();
            var since = DateTimeOffset.UtcNow;
            await target.WaitUntilAsync(t => moving.All(path => t.Requests.Any(r => r.Path == path && r.At > since && r.Node != busiest)), TimeSpan.FromSeconds(10));
            Assert.True(clock.Elapsed <= TimeSpan.FromSeconds(2 * Interval), $"moved after {clock.Elapsed}");

            // Still exactly one prober each, and nothing lapsed meanwhile.
            var settled = DateTimeOffset.UtcNow;
            await target.WaitUntilAsync(t => Enumerable.Range(0, instances).All(i => t.Requests.Count(r => r.Path == $"/app{i}" && r.At > settled) >= 2), TimeSpan.FromSeconds(10));
            Assert.True(
                target.Requests.Where(r => r.At > settled).GroupBy(r => r.Path).All(g => g.Select(r => r.Node).Distinct().Count() == 1),
                $"probed by more than one node since {settled:HH:mm:ss.fff}: {target.Describe()}; membership seen: {views}");
            using var survivor = nodes[0].CreateClient(); // the first client's node may be the one stopped
            using var services = await survivor.GetAsync(new Uri("/v1/services", UriKind.Relative));
            Assert.Equal(instances, (await services.ReadJsonAsync())["services"]!.AsArray().Count);
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task NodesThatCannotProbeAnInstanceTakeNoShareOfItAndEvictNothing()
    {
        // Three live nodes, one able to probe loopback: one has probing off (a node a rolling
        // configuration change has not reached), one allows only 10.0.0.0/8. Before, each took a
        // share of the probed instances; the first never probed its share, the second failed
        // every probe of its own and ended healthy instances' leases.
        var database = await Cluster.CreateDatabaseAsync();
        await using var able = new RegistryNode(database, Probing);
        await using var off = new RegistryNode(database, new Dictionary<string, string?> { ["Registry:Probes:RefreshInterval"] = "00:00:00.200" });
        await using var elsewhere = new RegistryNode(database, new Dictionary<string, string?>(Probing) { ["Registry:Probes:AllowedNetworks:0"] = "10.0.0.0/8" });
        RegistryNode[] nodes = [able, off, elsewhere];
        foreach (var node in nodes)
        {
            _ = node.Server;
        }

        await Task.WhenAll(nodes.Select(n => WaitAsync(() => n.Get<LiveNodes>().Current.Count == 3)));
        await using var target = new ProbeTarget();
        using var client = able.CreateClient();
        const int instances = 12;
        await RegisterProbedAppsAsync(client, target, instances);

        // Each one probed past FailuresToEvict (3) intervals, all by the node that may.
        await target.WaitUntilAsync(t => Enumerable.Range(0, instances).All(i => t.Requests.Count(r => r.Path == $"/app{i}") >= 5), TimeSpan.FromSeconds(20));
        var probers = target.Requests.Select(r => r.Node).Distinct().ToList();
        Assert.Equal(able.Get<NodeIdentity>().Id, Assert.Single(probers));
        using var services = await client.GetAsync(new Uri("/v1/services", UriKind.Relative));
        Assert.Equal(instances, (await services.ReadJsonAsync())["services"]!.AsArray().Count);
        Assert.Equal(0, await EvictedAsync(database));
    }

    [Fact]
    public async Task ANodeCutOffFromTheInstancesItProbesLeavesThemToTheOthersAndEvictsNothing()
    {
        // Once every node probes its share, the target drops every connection from one node, as
        // for a node whose route to those providers is gone while it still reaches the database.
        // Before, that node failed its share FailuresToEvict times in a row and ended healthy
        // instances' leases. It alone may probe the providers on 127.0.0.2, which it still reaches:
        // those it must go on probing while it leaves the rest to the others.
        var database = await Cluster.CreateDatabaseAsync();
        // Probes every second, marks every second and reads of the live nodes every two: the node learns how the
        // others' probes go only after its own instances' third failures, and must end no lease meanwhile.
        var settings = new Dictionary<string, string?>(Probing)
        {
            ["Registry:Probes:AllowedNetworks:0"] = "127.0.0.1/32",
            ["Registry:Membership:RefreshInterval"] = "00:00:02",
            ["Registry:Probes:SuspectSelfMinInstances"] = "4",
            ["Registry:Probes:SuspectSelfFor"] = "00:00:08",
        };
        await using var nodes = await StartedNodes.StartAsync(
            database, settings, settings, new Dictionary<string, string?>(settings) { ["Registry:Probes:AllowedNetworks:0"] = "127.0.0.0/8" });
        await using var target = new ProbeTarget();
        await using var onlyItsOwn = new ProbeTarget(IPAddress.Parse("127.0.0.2"));
        using var client = nodes[0].CreateClient();
        const int instances = 48;
        await RegisterProbedAppsAsync(client, target, instances);

        using var itsClient = nodes[2].CreateClient();
        const int itsOwn = 4;
        await RegisterProbedAppsAsync(itsClient, onlyItsOwn, itsOwn, "own");

        // Every node probes its share, and every node sees that the others' probes pass.
        await target.WaitUntilAsync(t => Enumerable.Range(0, instances).All(i => t.Requests.Any(r => r.Path == $"/app{i}")), TimeSpan.FromSeconds(20));
        await nodes.WaitUntilEachSeesAllProbesPassingAsync();
        var cut = nodes[2].Get<NodeIdentity>().Id;
        target.CutOff = node => node == cut;

        // It withdraws, as every node's view of the live nodes shows...
        await Task.WhenAll(nodes.Select(n => WaitAsync(() => n.Get<LiveNodes>().Current.Any(m => m.Id == cut && m.ProbesWithdrawn))));

        // ...and the others probe its share, which passes, while it goes on probing what only it may: nothing was evicted.
        var moved = DateTimeOffset.UtcNow;
        await target.WaitUntilAsync(
            t => Enumerable.Range(0, instances).All(i => t.Requests.Count(r => r.Path == $"/app{i}" && r.At > moved && r.Node != cut) >= 2),
            TimeSpan.FromSeconds(15));
        await onlyItsOwn.WaitUntilAsync(t => Enumerable.Range(0, itsOwn).All(i => t.Requests.Count(r => r.Path == $"/own{i}" && r.At > moved) >= 2), TimeSpan.FromSeconds(5));
        using var services = await client.GetAsync(new Uri("/v1/services", UriKind.Relative));
        Assert.Equal(instances + itsOwn, (await services.ReadJsonAsync())["services"]!.AsArray().Count);
        Assert.Equal(0, await EvictedAsync(database));

        // Reachable again, it takes a share again once SuspectSelfFor has passed, and keeps it.
        target.CutOff = _ => false;
        await Task.WhenAll(nodes.Select(n => WaitAsync(() => n.Get<LiveNodes>().Current.Any(m => m.Id == cut && !m.ProbesWithdrawn && m.ProbesPassing >= 0.5))));
        var rejoined = DateTimeOffset.UtcNow;
        await target.WaitUntilAsync(t => t.Requests.Count(r => r.Node == cut && r.At > rejoined) >= 8, TimeSpan.FromSeconds(15));
        Assert.Equal(0, await EvictedAsync(database));
    }

    [Fact]
    public async Task ANodeCutOffFromAShareOfMixedIntervalsEndsNoLeaseOfItsInstancesProbedMostOften()
    {
        // Most instances are probed every 10 s, a few every second: the node's rate over enough
        // probes to judge (three of its shortest intervals) falls only after the 1 s instances'
        // third failures. Those must not be ended meanwhile.
        var database = await Cluster.CreateDatabaseAsync();
        await using var nodes = await StartedNodes.StartAsync(database, Probing, Probing, Probing);
        await using var target = new ProbeTarget();
        using var client = nodes[0].CreateClient();
        await RegisterProbedAppsAsync(client, target, 12, "fast");
        for (var i = 0; i < 60; i++)
        {
            using var response = await client.PostJsonAsync($"/v1/register?probe=http&probePath=/slow{i}&probeInterval=10", Http.Provider($"slow{i}", target.Addr));
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await nodes.WaitUntilEachSeesAllProbesPassingAsync();
        // The node probing the most fast instances (at least 4 of the 12).
        var cut = target.Requests.Where(r => r.Path.StartsWith("/fast", StringComparison.Ordinal))
            .GroupBy(r => r.Node).MaxBy(g => g.Select(r => r.Path).Distinct().Count())!.Key;
        target.CutOff = node => node == cut;
        await Task.WhenAll(nodes.Select(n => WaitAsync(() => n.Get<LiveNodes>().Current.Any(m => m.Id == cut && m.ProbesWithdrawn))));

        // Its fast instances, probed by the others now, pass; none was ended.
        var moved = DateTimeOffset.UtcNow;
        await target.WaitUntilAsync(
            t => Enumerable.Range(0, 12).All(i => t.Requests.Count(r => r.Path == $"/fast{i}" && r.At > moved && r.Node != cut) >= 2),
            TimeSpan.FromSeconds(15));
        Assert.Equal(0, await EvictedAsync(database));
    }

    [Fact]
    public async Task InASmallClusterWhereNoNodeHasARateDeadInstancesAreStillEvictedAfterTheirFailures()
    {
        // Two nodes, six instances: no share reaches SuspectSelfMinInstances, so no node publishes
        // a rate. When they all die, a node whose recent probes all fail suspects itself and no peer
        // can tell it otherwise: it waits a mark, two reads and a window for an answer, then ends
        // the leases, rather than leaving dead instances listed until their long leases run out.
        var database = await Cluster.CreateDatabaseAsync();
        await using var nodes = await StartedNodes.StartAsync(database, Probing, Probing);
        await using var target = new ProbeTarget();
        using var client = nodes[0].CreateClient();
        const int instances = 6;
        for (var i = 0; i < instances; i++)
        {
            using var response = await client.PostJsonAsync($"/v1/register?ttl=120&probe=http&probePath=/app{i}&probeInterval={Interval}", Http.Provider($"app{i}", target.Addr));
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        await target.WaitUntilAsync(t => Enumerable.Range(0, instances).All(i => t.Requests.Count(r => r.Path == $"/app{i}") >= 2), TimeSpan.FromSeconds(20));
        var subscription = Http.Subscription([.. Enumerable.Range(0, instances).Select(i => Http.Entry($"app{i}"))]);
        var (_, version, body) = await client.SubscribeAsync(subscription);
        Assert.Equal(instances, body!["endpoints"]!.AsArray().Count);

        target.Answer = _ => (503, "", TimeSpan.Zero);
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(25));
        while (body!["endpoints"]!.AsArray().Count > 0)
        {
            (_, version, body) = await client.SubscribeAsync(subscription, version, wait: 30).WaitAsync(deadline.Token);
        }

        Assert.Equal(instances, await EvictedAsync(database));
    }

    [Fact]
    public async Task WhenEveryNodesProbesFailAlikeNoneWithdrawsAndTheInstancesAreEvicted()
    {
        // The providers go down, not a node's route to them: every node's probes fail, none
        // suspects itself, and their leases end (within self-preservation's budget).
        var database = await Cluster.CreateDatabaseAsync();
        var settings = new Dictionary<string, string?>(Probing) { ["Registry:Probes:SuspectSelfMinInstances"] = "4" };
        await using var nodes = await StartedNodes.StartAsync(database, settings, settings, settings);
        await using var target = new ProbeTarget();
        using var client = nodes[0].CreateClient();
        // Enough that every node's share holds SuspectSelfMinInstances, whatever ids rendezvous is given.
        await RegisterProbedAppsAsync(client, target, 60);
        await nodes.WaitUntilEachSeesAllProbesPassingAsync();

        // Whether any node withdraws, until every lease self-preservation lets go has been
        // ended and evicted: nothing signals either, so look often.
        target.Answer = _ => (503, "", TimeSpan.Zero);
        var clock = Stopwatch.StartNew();
        var evicted = 0;
        while (clock.Elapsed < TimeSpan.FromSeconds(20) && (evicted = await EvictedAsync(database)) < 4)
        {
            Assert.DoesNotContain(nodes, n => n.Get<NodeCapabilities>().Probes.Withdrawn);
            await Task.Delay(TimeSpan.FromMilliseconds(50));
        }

        Assert.True(evicted >= 4, $"evicted {evicted} of 60 in {clock.Elapsed}");
    }

    /// <summary>Nodes on one database, started and each seeing all of them live; stopped together.</summary>
    private sealed class StartedNodes : IEnumerable<RegistryNode>, IAsyncDisposable
    {
        private readonly RegistryNode[] _nodes;

        private StartedNodes(RegistryNode[] nodes) => _nodes = nodes;

        public RegistryNode this[int index] => _nodes[index];

        public static async Task<StartedNodes> StartAsync(string database, params IReadOnlyList<Dictionary<string, string?>> settings)
        {
            var nodes = new StartedNodes([.. settings.Select(s => new RegistryNode(database, s))]);
            foreach (var node in nodes._nodes)
            {
                _ = node.Server;
            }

            try
            {
                await Task.WhenAll(nodes._nodes.Select(n => WaitAsync(() => n.Get<LiveNodes>().Current.Count == nodes._nodes.Length)));
            }
            catch
            {
                await nodes.DisposeAsync();
                throw;
            }

            return nodes;
        }

        /// <summary>Until every node sees each of them pass at least half of its probes (how each judges its own).</summary>
        public Task WaitUntilEachSeesAllProbesPassingAsync() =>
            Task.WhenAll(_nodes.Select(n => WaitAsync(() => n.Get<LiveNodes>().Current is { } seen && seen.Count == _nodes.Length && seen.All(m => m.ProbesPassing >= 0.5))));

        public IEnumerator<RegistryNode> GetEnumerator() => ((IEnumerable<RegistryNode>)_nodes).GetEnumerator();

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();

        public async ValueTask DisposeAsync()
        {
            foreach (var node in _nodes)
            {
                await node.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task ANodeLateToMarkItselfForOneMembershipReadKeepsItsInstances()
    {
        // A node's mark missing from one read of the live nodes (a pause, a slow write) must not
        // hand its instances to another node for the moment until it is seen again: forced here
        // by ageing the first node's mark until the second node's read misses it, three times.
        // Each time the read before missed the second node itself, as after a pause of the
        // process both nodes run in: two reads in a row each missed one node, never the same.
        var database = await Cluster.CreateDatabaseAsync();
        var settings = new Dictionary<string, string?>(Probing)
        {
            // Marks every 100 ms, reads a second apart (the default): the mark is back long
            // before the read after the one that missed it.
            ["Registry:Leases:LivenessInterval"] = "00:00:00.100",
            ["Registry:Membership:RefreshInterval"] = "00:00:01",
        };
        await using var target = new ProbeTarget();
        // The first node reads the live nodes once, when it starts (after the second): ageing a
        // mark must only ever be seen by the second node, which stops ageing it at the first
        // read that misses it; the first would see one ageing across two of its own reads.
        await using var first = new RegistryNode(database, new Dictionary<string, string?>(settings) { ["Registry:Membership:RefreshInterval"] = "01:00:00" });
        await using var second = new RegistryNode(database, settings);
        _ = second.Server;
        _ = first.Server;
        await Task.WhenAll(new[] { first, second }.Select(n => WaitAsync(() => n.Get<LiveNodes>().Current.Count == 2)));
        using var views = new MembershipViews([first, second]);
        using var client = first.CreateClient();
        // Many, because a taken instance is first probed at a point of the interval fixed by its
        // key: with few, none may fall within the moment the other node holds them.
        const int instances = 40;
        await RegisterProbedAppsAsync(client, target, instances);

        await target.WaitUntilAsync(t => Enumerable.Range(0, instances).All(i => t.Requests.Any(r => r.Path == $"/app{i}")), TimeSpan.FromSeconds(20));
        var observer = second.Get<LiveNodes>();
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        for (var round = 0; round < 3; round++)
        {
            foreach (var late in new[] { second, first }.Select(n => n.Get<NodeIdentity>().Id))
            {
                await using var age = new NpgsqlCommand("UPDATE nodes SET last_seen_at = clock_timestamp() - interval '1 minute' WHERE id = @id", connection);
                age.Parameters.AddWithValue("id", late);
                using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                while (observer.Current.Any(n => n.Id == late))
                {
                    await age.ExecuteNonQueryAsync(deadline.Token);
                    await Task.Delay(TimeSpan.FromMilliseconds(10), deadline.Token);
                }
            }

            // Until the read after next: had the second node taken the first one's share, it
            // would have probed it within that second.
            await Task.Delay(TimeSpan.FromSeconds(1.5));
        }

        var probers = target.Requests.GroupBy(r => r.Path).ToDictionary(g => g.Key, g => g.Select(r => r.Node).Distinct().Count());
        Assert.Equal(instances, probers.Count);
        Assert.True(probers.Values.All(count => count == 1), $"probed by more than one node: {target.Describe()}; membership seen: {views}");
    }

    private static async Task<string> RefusedAsync(HttpClient client, string path, string provider, string field = "addr")
    {
        using var response = await client.PostJsonAsync(path, provider);
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{path}: {(int)response.StatusCode} {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var reasons = System.Text.Json.Nodes.JsonNode.Parse(body)!["errors"]![field]!.AsArray();
        return string.Join(" ", reasons.Select(r => (string?)r));
    }

    /// <summary>Each node's view of the live nodes whenever it changes, for failure messages.</summary>
    private sealed class MembershipViews : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _changes = new();

        public MembershipViews(IReadOnlyList<RegistryNode> nodes)
        {
            var watched = nodes.Select(n => (Id: n.Get<NodeIdentity>().Id, Live: n.Get<LiveNodes>())).ToList();
            _ = Task.Run(async () =>
            {
                var last = new Dictionary<string, string>();
                while (!_stop.IsCancellationRequested)
                {
                    foreach (var (id, live) in watched)
                    {
                        var view = string.Join("+", live.Current.Select(n => n.Id));
                        if (!last.TryGetValue(id, out var before) || before != view)
                        {
                            last[id] = view;
                            _changes.Enqueue($"{DateTimeOffset.UtcNow:HH:mm:ss.fff} {id} sees {view}");
                        }
                    }

                    await Task.Delay(TimeSpan.FromMilliseconds(20), CancellationToken.None);
                }
            });
        }

        public override string ToString() => string.Join("; ", _changes);

        public void Dispose() => _stop.Cancel();
    }

    /// <summary>Membership is read from the database every liveness interval: no signal to await, so look each interval.</summary>
    private static async Task WaitAsync(Func<bool> condition)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (!condition())
        {
            await Task.Delay(TimeSpan.FromMilliseconds(50), deadline.Token);
        }
    }
}
