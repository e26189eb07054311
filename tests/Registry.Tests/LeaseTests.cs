using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>Leases: heartbeats, one sweeper at a time, grace after an outage, self-preservation, coalesced renewals.</summary>
public sealed class LeaseTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private static string Instance(string application, int i) => Http.Provider(application, $"10.0.{i / 250}.{i % 250 + 1}:80");

    [Fact]
    public async Task ALeaseReloadedShorterThanThisNodeWroteIsWrittenAtTheNextHeartbeat()
    {
        // A failover to a replica that missed the last writes leaves a row whose expiry is earlier than this node wrote,
        // under the same revision, and the change feed reconnects and reloads it. What the node remembers writing must
        // not outrank the reloaded row: heartbeats would be answered from that memory, nothing written, until the lease
        // ran out in the database and the instance was evicted while its provider kept heartbeating.
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database);
        using var client = node.CreateClient();
        using (var response = await client.PostJsonAsync("/v1/register?ttl=20", Instance("app", 0)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        using var reloads = MeterWatch.Node(node, "registry.changefeed.reloads", "scope", "all");
        using var written = MeterWatch.Node(node, "registry.heartbeats.written");
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await using var restored = new NpgsqlCommand("UPDATE instances SET expires_at = now() + interval '2 seconds'", connection);
            Assert.Equal(1, await restored.ExecuteNonQueryAsync());
            await using var kill = new NpgsqlCommand(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = @name AND datname = current_database()", connection);
            kill.Parameters.AddWithValue("name", Registry.Storage.RegistryDatabase.ChangeFeedApplicationName);
            Assert.Equal(1L, await kill.ExecuteScalarAsync());
        }

        await reloads.WaitForAsync(1, TimeSpan.FromSeconds(15));
        using (var heartbeat = await client.PostJsonAsync("/v1/heartbeat", Instance("app", 0)))
        {
            Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode);
        }

        await written.WaitForAsync(1, TimeSpan.FromSeconds(5));
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await using var left = new NpgsqlCommand("SELECT expires_at > now() + interval '10 seconds' FROM instances", connection);
            Assert.True((bool)(await left.ExecuteScalarAsync())!);
        }
    }

    /// <summary>
    /// The row of an instance is gone and its notification lost: the renewal a heartbeat brings finds no row. Before,
    /// memory went on listing the instance and answering its heartbeats 200 (each renewal finding no row, the provider
    /// never told to register again) until the consistency check; now the renewal announces the instance, and every
    /// node reads it again.
    /// </summary>
    /// <summary>
    /// The node remembers each expiry it wrote, so that heartbeats within it need no write. Before, only the expiry's
    /// passing forgot one: registering with a day's TTL and unregistering, over and over on fresh addresses, left an
    /// entry for a day per two writes. The periodic prune now also forgets what memory no longer holds.
    /// </summary>
    [Fact]
    public async Task ExpiriesOfUnregisteredInstancesAreNotRememberedUntilTheyRunOut()
    {
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync());
        using var client = node.CreateClient();
        for (var i = 0; i < 5; i++)
        {
            using var registered = await client.PostJsonAsync("/v1/register?ttl=3600", Instance("app", i));
            Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
        }

        for (var i = 0; i < 3; i++)
        {
            using var unregistered = await client.PostJsonAsync("/v1/unregister", Instance("app", i));
            Assert.Equal(HttpStatusCode.NoContent, unregistered.StatusCode);
        }

        var renewer = node.Get<Registry.Leases.LeaseRenewer>();
        renewer.Prune();

        Assert.Equal(2, renewer.Remembered);
    }

    [Fact]
    public async Task ARenewalThatFindsNoRowTakesTheInstanceOutOfMemory()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:ChangeFeed:ConsistencyCheckInterval"] = "01:00:00",
            ["Registry:Leases:SweepInterval"] = "01:00:00",
        });
        using var client = node.CreateClient();
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        // A lease past half its TTL: a heartbeat's renewal is written.
        await using (var insert = new NpgsqlCommand(
            """
            INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
            VALUES ('app', 'http', '10.0.0.1:80', '{}', 60, clock_timestamp() + interval '20 seconds', clock_timestamp())
            """, connection))
        {
            await insert.ExecuteNonQueryAsync();
        }

        await node.ReloadAsync();
        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        using var parked = ParkedPolls.On(node);
        var poll = client.SubscribeAsync(subscription, version, wait: 20);
        await parked.WaitForAsync(1);
        await using (var delete = new NpgsqlCommand("DELETE FROM instances", connection))
        {
            Assert.Equal(1, await delete.ExecuteNonQueryAsync());
        }

        using (var heartbeat = await client.PostJsonAsync("/v1/heartbeat", Instance("app", 0)))
        {
            Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode); // from memory: the renewal is written after
        }

        var (_, _, body) = await poll.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Empty(body!["endpoints"]!.AsArray());
        using (var heartbeat = await client.PostJsonAsync("/v1/heartbeat", Instance("app", 0)))
        {
            Assert.Equal(HttpStatusCode.NotFound, heartbeat.StatusCode);
        }
    }

    [Fact]
    public async Task HeartbeatsEveryThirdOfTheTtlKeepAnInstanceAliveAcrossFiveTtls()
    {
        using (var response = await Client.PostJsonAsync("/v1/register?ttl=1", Instance("app", 0)))
        {
            response.EnsureSuccessStatusCode();
        }

        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, _) = await Client.SubscribeAsync(subscription);
        var poll = Client.SubscribeAsync(subscription, version, wait: 5);

        var clock = Stopwatch.StartNew();
        var statuses = new List<HttpStatusCode>();
        while (!poll.IsCompleted)
        {
            // The provider's own cadence: this delay is the behaviour under test.
            await Task.Delay(TimeSpan.FromMilliseconds(333));
            using var heartbeat = await Client.PostJsonAsync("/v1/heartbeat", Instance("app", 0));
            statuses.Add(heartbeat.StatusCode);
        }

        var (_, after, body) = await poll;
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(5));
        Assert.Equal(version, after);
        Assert.Single(body!["endpoints"]!.AsArray());
        Assert.All(statuses, s => Assert.Equal(HttpStatusCode.OK, s));
    }

    [Fact]
    public async Task AHeartbeatAnsweredJustBeforeTheExpiryIsNotLostToASweepBeforeItsWrite()
    {
        // Renewals are written every 4 s; a lease of 1 s renewed just after a write is written
        // again only after it has run out in the database, and sweeps come in between (with
        // room for a slow registration and heartbeat on a loaded machine).
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Leases:RenewalInterval"] = "00:00:04",
            ["Registry:Leases:GraceGap"] = "00:00:08",
        });
        using var client = node.CreateClient();
        using var written = MeterWatch.Node(node, "registry.heartbeats.written");
        using var evicted = MeterWatch.Node(node, "registry.evictions");
        using var sweeps = MeterWatch.Node(node, "registry.sweeps", "outcome", "swept");
        async Task SendAsync(string path, string instance)
        {
            using var response = await client.PostJsonAsync(path, instance);
            Assert.True(response.IsSuccessStatusCode, $"{path}: {response.StatusCode}");
        }

        // A renewal written marks the start of an interval…
        await SendAsync("/v1/register?ttl=5", Instance("tick", 0));
        await SendAsync("/v1/heartbeat", Instance("tick", 0));
        await written.WaitForAsync(1);

        // …in which the 1 s lease is registered and renewed; its write waits for the next one.
        await SendAsync("/v1/register?ttl=1", Instance("app", 0));
        await SendAsync("/v1/heartbeat", Instance("app", 0));
        var sweptBefore = sweeps.Total;
        await written.WaitForAsync(2);

        Assert.True(sweeps.Total > sweptBefore, "no sweep looked at the database while the renewal waited");
        Assert.Equal(0, evicted.Total);
        var (_, _, body) = await client.SubscribeAsync(Http.Subscription(Http.Entry("app")));
        Assert.Single(body!["endpoints"]!.AsArray());
    }

    /// <summary>
    /// A node's mark tells the sweepers that every renewal it gathered before some time is written. A flush writes
    /// what was gathered when it began, then marks: it vouches for its start. A heartbeat answered while a flush
    /// stalled, for a lease that ran out meanwhile, waits for the next flush; before, the stalled flush's mark vouched
    /// for its end, after that expiry, and a sweep evicted the instance while the next flush waited, though its
    /// provider had been promised the lease (here the next flush waits for a locked row).
    /// </summary>
    [Fact]
    public async Task AHeartbeatAnsweredWhileAFlushStalledIsNotEvictedOnThatFlushsMark()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Leases:LivenessInterval"] = "00:00:00.100", // every flush marks
            ["Registry:Leases:GraceGap"] = "00:00:30", // no grace while the flushes wait
        });
        using var client = node.CreateClient();
        using var evicted = MeterWatch.Node(node, "registry.evictions");
        using var sweeps = MeterWatch.Node(node, "registry.sweeps", "outcome", "swept");
        // Rows are locked in key order: y before k before x.
        string y = Instance("app", 0), k = Instance("app", 1), x = Instance("app", 2);
        foreach (var instance in new[] { y, k, x })
        {
            using var registered = await client.PostJsonAsync("/v1/register?ttl=20", instance);
            registered.EnsureSuccessStatusCode();
        }

        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        var kExpires = await ShortenAsync(client, connection, TimeSpan.FromSeconds(6.5));

        // A flush stalls on x; k and y are renewed meanwhile and answered at once.
        await using var lockX = await LockAsync(database, "10.0.0.3:80");
        Assert.Equal(HttpStatusCode.OK, await HeartbeatAsync(client, x));
        await Backends.WaitingForALockAsync(database, "WITH due%");
        await using var lockY = await LockAsync(database, "10.0.0.1:80");
        Assert.Equal(HttpStatusCode.OK, await HeartbeatAsync(client, k));
        Assert.Equal(HttpStatusCode.OK, await HeartbeatAsync(client, y));

        // k runs out in the database (and the sweepers' settle margin passes); then the stalled flush ends and marks,
        // and the next one, with k, waits for y.
        var untilRunOut = kExpires - await ScalarAsync<DateTime>(connection, "SELECT clock_timestamp()") + TimeSpan.FromMilliseconds(400);
        await Task.Delay(untilRunOut > TimeSpan.Zero ? untilRunOut : TimeSpan.Zero);
        await lockX.Transaction.RollbackAsync();
        await Backends.WaitingForALockAsync(database, "WITH due%");
        var swept = sweeps.Total;
        await sweeps.WaitForAsync(swept + 3);

        Assert.Equal(0, evicted.Total);
        Assert.Equal(3L, await ScalarAsync<long>(connection, "SELECT count(*) FROM instances"));
        await lockY.Transaction.RollbackAsync();
    }

    /// <summary>
    /// When the cluster owes a grace (no node marked for the grace gap), a sweep must not run before a node has written
    /// what it promised: the sweep's grace used to extend the leases and mark its node, and that mark released the
    /// sweepers' hold on a renewal the node had answered and not yet written (its flush waiting on a locked row); the
    /// same sweep then evicted that instance. Now a sweep waits while a grace is owed; the first node to write its
    /// renewals extends the leases and marks.
    /// </summary>
    [Fact]
    public async Task ASweepWhileAGraceIsOwedDoesNotEvictARenewalItsNodePromised()
    {
        var database = await Cluster.CreateDatabaseAsync();
        var settings = new Dictionary<string, string?> { ["Registry:Leases:LivenessInterval"] = "00:00:00.100" };
        await using var node = new RegistryNode(database, settings);
        await using var other = new RegistryNode(database, settings);
        _ = other.Server; // marks every 100 ms until it stops
        using var client = node.CreateClient();
        using var evicted = MeterWatch.Node(node, "registry.evictions");
        using var waited = MeterWatch.Node(node, "registry.sweeps", "outcome", "grace_owed");
        string k = Instance("app", 1), x = Instance("app", 2);
        foreach (var instance in new[] { k, x })
        {
            using var registered = await client.PostJsonAsync("/v1/register?ttl=20", instance);
            registered.EnsureSuccessStatusCode();
        }

        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        // x runs out with k, before the grace's start: the grace does not wait for x's lock either.
        var kExpires = await ShortenAsync(client, connection, TimeSpan.FromSeconds(5.1));

        // This node's flush stalls on x (it marks no more); k is renewed meanwhile and answered at once.
        await using var lockX = await LockAsync(database, "10.0.0.3:80");
        Assert.Equal(HttpStatusCode.OK, await HeartbeatAsync(client, x));
        await Backends.WaitingForALockAsync(database, "WITH due%");
        Assert.Equal(HttpStatusCode.OK, await HeartbeatAsync(client, k));

        // k runs out while the other node still marks, then that node stops: after the grace gap (2 s) a grace is owed,
        // which does not cover k (it ran out before the last mark); only this node's hold keeps it.
        var untilRunOut = kExpires - await ScalarAsync<DateTime>(connection, "SELECT clock_timestamp()") + TimeSpan.FromMilliseconds(400);
        await Task.Delay(untilRunOut > TimeSpan.Zero ? untilRunOut : TimeSpan.Zero);
        await other.DisposeAsync();
        await Task.WhenAny(waited.WaitForAsync(2, TimeSpan.FromSeconds(15)), evicted.WaitForAsync(1, TimeSpan.FromSeconds(15)));

        Assert.Equal(0, evicted.Total);
        Assert.True(waited.Total >= 2, "no sweep found the grace owed");
        Assert.Equal(2L, await ScalarAsync<long>(connection, "SELECT count(*) FROM instances"));
        await lockX.Transaction.RollbackAsync();
    }

    /// <summary>
    /// A heartbeat that comes after its lease ran out, and after the node's last mark, is held
    /// back by no sweeper: a sweep may evict the instance before the node's next flush writes the
    /// renewal. Its provider must not be told an expiry that no row holds (before, it got 200,
    /// the instance went, and it learnt only at its next heartbeat); it hears 404 and registers
    /// again, or, had the flush come first, the expiry the database now holds.
    /// </summary>
    [Fact]
    public async Task AHeartbeatAfterTheLeaseRanOutIsNotAnsweredWithAnExpiryNoRowHolds()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        // Renewals are written (and the node marks) every 4 s; a lease is evicted 8 s after it ran out.
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Leases:RenewalInterval"] = "00:00:04",
            ["Registry:Leases:GraceGap"] = "00:00:08",
            ["Registry:Leases:SweepInterval"] = "00:00:00.200",
        });
        using var client = node.CreateClient();
        using var marks = MeterWatch.Node(node, "registry.liveness.marks");
        using var evicted = MeterWatch.Node(node, "registry.evictions");
        using (var registered = await client.PostJsonAsync("/v1/register?ttl=30", Instance("late", 0)))
        {
            Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
        }

        // Just after a mark, the lease is made to have run out 6.5 s ago: evictable in 1.5 s, the next flush in 4.
        await marks.WaitForAsync(marks.Total + 1, TimeSpan.FromSeconds(10));
        await ShortenLeaseAsync(node, client, connection, "late", TimeSpan.FromSeconds(-6.5));
        using var heartbeat = await client.PostJsonAsync("/v1/heartbeat", Instance("late", 0));
        await marks.WaitForAsync(marks.Total + 1, TimeSpan.FromSeconds(10)); // a flush since has written what it would
        await using var read = new NpgsqlCommand("SELECT expires_at FROM instances WHERE application = 'late'", connection);
        var stored = (DateTime?)await read.ExecuteScalarAsync();
        // Either outcome is the truth; on a quick machine the sweep comes first (1.5 s against 4), and the answer is 404.
        if (heartbeat.StatusCode == HttpStatusCode.OK)
        {
            var promised = DateTimeOffset.Parse((string)(await heartbeat.ReadJsonAsync())["expires"]!, CultureInfo.InvariantCulture);
            Assert.True(stored >= promised.UtcDateTime.AddSeconds(-1), $"answered 200 until {promised:O}; the database holds {stored?.ToString("O") ?? "no row"}");
            Assert.Equal(0, evicted.Total);
        }
        else
        {
            Assert.Equal(HttpStatusCode.NotFound, heartbeat.StatusCode);
            Assert.Null(stored);
            Assert.Equal(1, evicted.Total);
        }
    }

    /// <summary>
    /// A node stopped cleanly (a rolling deploy) writes the renewals it promised and had not yet
    /// written; dropped, they would leave the database with an earlier expiry, and another
    /// node's sweeper would evict the instance before the expiry its provider was told.
    /// </summary>
    [Fact]
    public async Task ANodeStoppedCleanlyWritesTheRenewalsItPromised()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            // No periodic write between the heartbeat and the stop.
            ["Registry:Leases:RenewalInterval"] = "00:00:30",
            ["Registry:Leases:GraceGap"] = "00:01:00",
        });
        DateTimeOffset promised;
        await using (node)
        {
            using var client = node.CreateClient();
            using (var registered = await client.PostJsonAsync("/v1/register?ttl=30", Instance("rolling", 0)))
            {
                Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
            }

            await ShortenLeaseAsync(node, client, connection, "rolling");
            using var heartbeat = await client.PostJsonAsync("/v1/heartbeat", Instance("rolling", 0));
            Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode);
            promised = DateTimeOffset.Parse((string)(await heartbeat.ReadJsonAsync())["expires"]!, CultureInfo.InvariantCulture);
            Assert.True(promised > DateTimeOffset.UtcNow + TimeSpan.FromSeconds(20), $"the heartbeat promised only {promised:O}");
        }

        await using var read = new NpgsqlCommand("SELECT expires_at FROM instances WHERE application = 'rolling'", connection);
        var stored = (DateTime)(await read.ExecuteScalarAsync())!;
        Assert.True(stored >= promised.UtcDateTime.AddSeconds(-1), $"the database holds {stored:O}, the provider was promised {promised:O}");
    }

    /// <summary>
    /// A node answers a due heartbeat with the new expiry and writes it with its next flush; cut
    /// off from the database in between (a dead route: nothing refused, nothing answered), it
    /// cannot. Another node's sweeper must not evict the instance before the expiry its provider
    /// was told, however long the node stays unseen, and evicts it once no promise can be left.
    /// </summary>
    [Fact]
    public async Task ANodeCutOffAfterPromisingARenewalHoldsTheEvictionUntilThePromiseRunsOut()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var proxy = new TcpProxy(database);
        var timings = new Dictionary<string, string?>
        {
            ["Registry:Leases:SweepInterval"] = "00:00:00.500",
            // Were the cut node's row forgotten this soon, the hold would go with it.
            ["Registry:Membership:ForgetAfter"] = "00:00:03.500",
        };
        // Short database timeouts for the node that is cut off alone: the other's start-up probe of the database, at
        // 1 s and unpooled, failed once under the load of the whole suite.
        await using var promising = new RegistryNode(proxy.ConnectionString, new Dictionary<string, string?>(timings)
        {
            ["Registry:Database:ConnectTimeoutSeconds"] = "1",
            ["Registry:Database:CommandTimeoutSeconds"] = "1",
        });
        await using var sweeping = new RegistryNode(database, timings);
        using var evicted = MeterWatch.Node(sweeping, "registry.evictions");
        using var client = promising.CreateClient();
        using (var registered = await client.PostJsonAsync("/v1/register?ttl=6", Instance("cut", 0)))
        {
            Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
        }

        await ShortenLeaseAsync(promising, client, connection, "cut");
        DateTimeOffset promised;
        using (var heartbeat = await client.PostJsonAsync("/v1/heartbeat", Instance("cut", 0)))
        {
            Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode);
            proxy.Stall();
            promised = DateTimeOffset.Parse((string)(await heartbeat.ReadJsonAsync())["expires"]!, CultureInfo.InvariantCulture);
        }

        // Unseen for the grace gap (3 s) within three seconds of the cut, which let the other
        // node's sweeper evict the lease the database still ended two seconds after it.
        await Task.Delay(promised - DateTimeOffset.UtcNow - TimeSpan.FromSeconds(1));
        await using (var read = new NpgsqlCommand("SELECT count(*) FROM instances WHERE application = 'cut'", connection))
        {
            Assert.True(1L == (long)(await read.ExecuteScalarAsync())!, $"evicted before {promised:O}, the expiry its provider was told");
        }

        Assert.Equal(0, evicted.Total);
        await evicted.WaitForAsync(1).WaitAsync(TimeSpan.FromSeconds(30));
    }

    /// <summary>
    /// A node that dies in the middle of a sweep, with no FIN reaching the database, leaves its
    /// session idle in the sweep's transaction, holding the cluster's sweep lock. PostgreSQL ends
    /// that session after the idle-in-transaction timeout, and another node sweeps again; before,
    /// it held the lock until the server's TCP keepalive gave up (two hours by default).
    /// </summary>
    [Fact]
    public async Task ANodeThatDiesInTheMiddleOfASweepHoldsTheSweepLockOnlyForTheIdleInTransactionTimeout()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var proxy = new TcpProxy(database);
        var settings = new Dictionary<string, string?>
        {
            ["Registry:Database:IdleInTransactionTimeoutSeconds"] = "1",
            // Nothing of the node's own ends the session meanwhile (a statement timeout would close its socket).
            ["Registry:Database:CommandTimeoutSeconds"] = "600",
            ["Registry:Leases:SweepInterval"] = "00:00:00.200",
            ["Registry:Leases:LivenessInterval"] = "00:00:00.250",
        };
        await using var dying = new RegistryNode(proxy.ConnectionString, settings);
        _ = dying.Server; // started: the schema is in place
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        // A node row old enough to be forgotten, locked: the sweep waits for it while it holds the sweep lock.
        await using (var stale = new NpgsqlCommand("INSERT INTO nodes (id, started_at, last_seen_at) VALUES ('gone', now() - interval '2 days', now() - interval '2 days')", connection))
        {
            await stale.ExecuteNonQueryAsync();
        }

        await using var holder = await connection.BeginTransactionAsync();
        await using (var hold = new NpgsqlCommand("SELECT 1 FROM nodes WHERE id = 'gone' FOR UPDATE", connection, holder))
        {
            await hold.ExecuteNonQueryAsync();
        }

        using (var client = dying.CreateClient())
        using (var registered = await client.PostJsonAsync("/v1/register?ttl=1", Instance("app", 0)))
        {
            Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
        }

        // The lease runs out, the node sweeps, takes the lock and waits for the locked row.
        await Backends.WaitingForALockAsync(database, "DELETE FROM nodes%");

        // The node's route dies; its statement then goes through, and its session waits, idle in the transaction.
        proxy.Stall();
        await holder.CommitAsync();
        await using var sweeping = new RegistryNode(database, settings);
        using var evicted = MeterWatch.Node(sweeping, "registry.evictions");
        await evicted.WaitForAsync(1, TimeSpan.FromSeconds(15));
        await proxy.CutAsync();
    }

    /// <summary>
    /// Leaves <paramref name="application"/>'s lease <paramref name="left"/> (two seconds unless
    /// given; negative: run out that long ago) in the database, as another writer would, and waits
    /// until <paramref name="node"/> has loaded it: a heartbeat's renewal is then due, and answered
    /// with a new expiry not yet written.
    /// </summary>
    private static async Task ShortenLeaseAsync(RegistryNode node, HttpClient client, NpgsqlConnection connection, string application, TimeSpan? left = null)
    {
        var subscription = Http.Subscription(Http.Entry(application));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        using var parked = ParkedPolls.On(node);
        var poll = client.SubscribeAsync(subscription, version, wait: 10);
        await parked.WaitForAsync(1);
        await using var shorten = new NpgsqlCommand(
            """
            UPDATE instances SET meta = '{"v":"short"}', revision = nextval('instance_revision'),
                   expires_at = clock_timestamp() + @left WHERE application = @application;
            SELECT pg_notify('registry_changes', @application);
            """, connection);
        shorten.Parameters.AddWithValue("application", application);
        shorten.Parameters.AddWithValue("left", left ?? TimeSpan.FromSeconds(2));
        await shorten.ExecuteNonQueryAsync();
        await poll.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task TwoNodesSweepingOneDatabaseEvictEachExpiredInstanceExactlyOnce()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var first = new RegistryNode(database);
        await using var second = new RegistryNode(database);
        using var sweepsFirst = MeterWatch.Node(first, "registry.sweeps");
        using var sweepsSecond = MeterWatch.Node(second, "registry.sweeps");
        using var evictedFirst = MeterWatch.Node(first, "registry.evictions");
        using var evictedSecond = MeterWatch.Node(second, "registry.evictions");
        await Task.WhenAll(sweepsFirst.WaitForAsync(2), sweepsSecond.WaitForAsync(2)); // both sweepers are running

        // Listening before anything is announced, so the sweep's notification cannot come first.
        await using var listener = await NotificationListener.StartAsync(database);
        await using (var connection = new NpgsqlConnection(database))
        {
            // As a registration would: rows and their announcement in one transaction, so both
            // nodes load them (and know when to sweep). They run out together two seconds later
            // (the transaction's time: per-row clock times could let one sweep fall between them,
            // evicting them in two parts, which is right but would notify twice).
            await connection.OpenAsync();
            await using var insert = new NpgsqlCommand(
                """
                INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
                SELECT 'swept', 'http', '10.0.0.' || i || ':80', '{}', 1, now() + interval '2 seconds', now()
                  FROM generate_series(1, 10) AS i;
                SELECT pg_notify('registry_changes', 'swept');
                """, connection);
            await insert.ExecuteNonQueryAsync();
        }

        using var firstClient = first.CreateClient();
        using var secondClient = second.CreateClient();
        var subscription = Http.Subscription(Http.Entry("swept"));
        foreach (var client in new[] { firstClient, secondClient })
        {
            var (_, version, body) = await client.SubscribeAsync(subscription);
            if (body!["endpoints"]!.AsArray().Count == 0)
            {
                await client.SubscribeAsync(subscription, version, wait: 10); // loaded from the notification
            }
        }

        // The insert's announcement, then the sweep's.
        await listener.WaitUntilAsync("swept", n => n >= 2);
        var swept = (sweepsFirst.Total, sweepsSecond.Total);
        // Two more rounds on each node: time for a double eviction to show if there were one.
        await Task.WhenAll(sweepsFirst.WaitForAsync(swept.Item1 + 2), sweepsSecond.WaitForAsync(swept.Item2 + 2));

        Assert.Equal(10, evictedFirst.Total + evictedSecond.Total);
        Assert.Equal(2, listener.Count("swept"));
        await using var check = new NpgsqlConnection(database);
        await check.OpenAsync();
        await using var count = new NpgsqlCommand("SELECT count(*) FROM instances", check);
        Assert.Equal(0L, (long)(await count.ExecuteScalarAsync())!);
    }

    [Fact]
    public async Task LeasesGetAGracePeriodAfterTheDatabaseWasUnreachable()
    {
        const int Ttl = 3;
        var database = await Cluster.CreateDatabaseAsync();
        await using var proxy = new TcpProxy(database);
        await using var node = new RegistryNode(proxy.ConnectionString);
        using var client = node.CreateClient();
        using var graces = MeterWatch.Node(node, "registry.sweeps", "outcome", "grace");
        using var marks = MeterWatch.Node(node, "registry.liveness.marks");
        await marks.WaitForAsync(1); // the database knows the cluster was recording before the outage
        using (var response = await client.PostJsonAsync($"/v1/register?ttl={Ttl}", Instance("app", 0)))
        {
            response.EnsureSuccessStatusCode();
        }

        // The database goes away for longer than the lease; the provider dies meanwhile. (Cut
        // at once: the lease must still be live when the outage begins.)
        await proxy.CutAsync();
        var outage = Stopwatch.StartNew();
        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, before) = await client.SubscribeAsync(subscription); // reads go on from memory
        Assert.Single(before!["endpoints"]!.AsArray());
        using (var refused = await client.PostJsonAsync("/v1/register", Instance("app", 1)))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            Assert.NotNull(refused.Headers.RetryAfter);
            Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        }

        // Parked across the end of the outage: answered when the instance goes.
        var gone = client.SubscribeAsync(subscription, version, wait: 30);
        var rest = TimeSpan.FromSeconds(Ttl + 1) - outage.Elapsed; // the outage itself, longer than the lease
        if (rest > TimeSpan.Zero)
        {
            await Task.Delay(rest);
        }

        // Timed from before the database is back, so that a slow machine can only make the
        // measured hold longer, never shorter than the grace it proves.
        var back = Stopwatch.StartNew();
        proxy.Start();
        var (_, after, body) = await gone;
        var held = back.Elapsed;

        // Expired during the outage, the lease is evicted only when the grace (its TTL, counted
        // from when the database was reachable again) has run out; without it, the first sweep
        // after the outage would take it.
        Assert.NotEqual(version, after);
        Assert.Empty(body!["endpoints"]!.AsArray());
        Assert.True(held >= TimeSpan.FromSeconds(Ttl), $"evicted {held} after the database was back, within the {Ttl} s grace");
        await graces.WaitForAsync(1, TimeSpan.FromSeconds(15));
    }

    [Fact]
    public async Task SelfPreservationRateLimitsAMassExpiryAndReleasesWhenItIsOver()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Leases:SelfPreservationShare"] = "0.2",
            ["Registry:Leases:SelfPreservationMinInstances"] = "2",
            ["Registry:Leases:SelfPreservationWindow"] = "00:00:02",
        });
        using var client = node.CreateClient();
        for (var i = 0; i < 20; i++)
        {
            // Half the fleet dies (TTL 1 s, no heartbeats); the other half lives.
            using var response = await client.PostJsonAsync(i < 10 ? "/v1/register?ttl=1" : "/v1/register?ttl=600", Instance("fleet", i));
            response.EnsureSuccessStatusCode();
        }

        var subscription = Http.Subscription(Http.Entry("fleet"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        var counts = new List<int>();
        var engagedSeen = false;
        var clock = Stopwatch.StartNew();
        while (counts.LastOrDefault(20) > 10 && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            var (_, next, body) = await client.SubscribeAsync(subscription, version, wait: 30);
            version = next;
            counts.Add(body!["endpoints"]!.AsArray().Count);
            using var ready = await client.GetAsync("/readyz");
            engagedSeen |= (bool)(await ready.ReadJsonAsync())["selfPreservation"]!["engaged"]!;
        }

        // 20 live, 10 expiring: 4 (20%) per 2 s window at most, never all at once...
        Assert.True(counts[0] >= 16, $"first eviction wave left {counts[0]}: {string.Join(",", counts)}");
        Assert.True(engagedSeen);
        // ...yet every dead instance goes within a bounded time, and the healthy ones stay.
        Assert.Equal(10, counts[^1]);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
        using var readyAfter = await client.GetAsync("/readyz");
        var state = (await readyAfter.ReadJsonAsync())["selfPreservation"]!;
        // The sweep that evicts the last one sees 1 expired: below the minimum, released.
        Assert.False((bool)state["engaged"]!, state.ToJsonString());
    }

    [Fact]
    public async Task RenewalsFromManyInstancesWithinOneIntervalCostOneStatement()
    {
        const string ApplicationName = "registry-renewal-test";
        const int Instances = 300;
        var database = await Cluster.CreateDatabaseAsync(ApplicationName);
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            // Keep the node's other statements out of the window.
            ["Registry:Leases:SweepInterval"] = "01:00:00",
            // Long enough that the 300 heartbeats, sent at once, fall within one or two intervals
            // even on a loaded machine; every one of them is still written (its lease ends in 20 s).
            ["Registry:Leases:RenewalInterval"] = "00:00:02",
            ["Registry:ChangeFeed:ConsistencyCheckInterval"] = "01:00:00",
            ["Registry:Leases:LivenessInterval"] = "01:00:00",
            ["Registry:Membership:RefreshInterval"] = "01:00:00",
            ["Registry:Leases:GraceGap"] = "02:00:00",
        });
        using var client = node.CreateClient();
        await using (var connection = new NpgsqlConnection(database))
        {
            // Leases close to their end, so that every heartbeat must be written.
            await connection.OpenAsync();
            await using var insert = new NpgsqlCommand(
                $$"""
                INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
                SELECT 'busy', 'http', '10.0.' || (i / 250) || '.' || (i % 250 + 1) || ':80', '{}', 60, clock_timestamp() + interval '20 seconds', clock_timestamp()
                  FROM generate_series(0, {{Instances - 1}}) AS i
                """, connection);
            await insert.ExecuteNonQueryAsync();
        }

        await node.ReloadAsync();
        using var written = MeterWatch.Node(node, "registry.heartbeats.written");
        using var statements = MeterWatch.NpgsqlStatements(ApplicationName);

        var heartbeats = await Task.WhenAll(Enumerable.Range(0, Instances).Select(async i =>
        {
            using var response = await client.PostJsonAsync("/v1/heartbeat", Instance("busy", i));
            return response.StatusCode;
        }));
        await written.WaitForAsync(Instances);

        Assert.All(heartbeats, s => Assert.Equal(HttpStatusCode.OK, s));
        // One UPDATE per interval; the heartbeats may straddle two intervals.
        Assert.InRange(statements.Total, 1, 2);
        await using var check = new NpgsqlConnection(database);
        await check.OpenAsync();
        await using var renewed = new NpgsqlCommand("SELECT count(*) FROM instances WHERE expires_at > clock_timestamp() + interval '50 seconds'", check);
        Assert.Equal((long)Instances, (long)(await renewed.ExecuteScalarAsync())!);
    }

    [Fact]
    public async Task AnIdleNodeWithParkedPollsExecutesNoStatements()
    {
        const string ApplicationName = "registry-idle-test";
        var database = await Cluster.CreateDatabaseAsync(ApplicationName);
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:ChangeFeed:ConsistencyCheckInterval"] = "01:00:00",
            ["Registry:Leases:LivenessInterval"] = "01:00:00",
            ["Registry:Membership:RefreshInterval"] = "01:00:00",
            ["Registry:Leases:GraceGap"] = "02:00:00",
        });
        using var client = node.CreateClient();
        using (var response = await client.PostJsonAsync("/v1/register?ttl=600", Instance("app", 0)))
        {
            response.EnsureSuccessStatusCode();
        }

        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        using var parked = ParkedPolls.On(node);
        var polls = Enumerable.Range(0, 100).Select(_ => client.SubscribeAsync(subscription, version, wait: 30)).ToArray();
        await parked.WaitForAsync(100);
        using var idleSweeps = MeterWatch.Node(node, "registry.sweeps", "outcome", "idle");
        await idleSweeps.WaitForAsync(1);

        using var statements = MeterWatch.NpgsqlStatements(ApplicationName);
        await idleSweeps.WaitForAsync(idleSweeps.Total + 5);

        // Five sweeper rounds with 100 polls parked, and not one statement.
        Assert.Equal(0, statements.Total);
        Assert.All(polls, p => Assert.False(p.IsCompleted));
    }

    private static async Task<T> ScalarAsync<T>(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>A row of <c>app</c> locked by a transaction of the test's own until it ends.</summary>
    private static async Task<RowLock> LockAsync(string database, string addr)
    {
        var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        var transaction = await connection.BeginTransactionAsync();
        await using var command = new NpgsqlCommand("SELECT 1 FROM instances WHERE application = 'app' AND addr = @addr FOR UPDATE", connection, transaction);
        command.Parameters.AddWithValue("addr", addr);
        await command.ExecuteNonQueryAsync();
        return new RowLock(connection, transaction);
    }

    private sealed record RowLock(NpgsqlConnection Connection, NpgsqlTransaction Transaction) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await Transaction.DisposeAsync();
            await Connection.DisposeAsync();
        }
    }

    /// <summary>
    /// Makes the instances of <c>app</c> (TTL 20 s) due for renewal (within half their TTL), 10.0.0.2:80 running out in
    /// 5 s (time enough for a loaded machine to reach its heartbeat first) and the others in <paramref name="others"/>;
    /// returns when the first does.
    /// </summary>
    private static async Task<DateTime> ShortenAsync(HttpClient client, NpgsqlConnection connection, TimeSpan others)
    {
        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        await using (var shorten = new NpgsqlCommand(
            """
            UPDATE instances SET meta = '{"v":"due"}', revision = nextval('instance_revision'),
                   expires_at = clock_timestamp() + CASE addr WHEN '10.0.0.2:80' THEN interval '5 seconds' ELSE @others END;
            SELECT pg_notify('registry_changes', 'app');
            """, connection))
        {
            shorten.Parameters.AddWithValue("others", others);
            await shorten.ExecuteNonQueryAsync();
        }

        await client.SubscribeAsync(subscription, version, wait: 10).WaitAsync(TimeSpan.FromSeconds(15));
        return await ScalarAsync<DateTime>(connection, "SELECT expires_at FROM instances WHERE addr = '10.0.0.2:80'");
    }

    private static async Task<HttpStatusCode> HeartbeatAsync(HttpClient client, string instance)
    {
        using var response = await client.PostJsonAsync("/v1/heartbeat", instance);
        return response.StatusCode;
    }
}
