using System.Net;
using System.Text.Json.Nodes;
using Npgsql;
using Registry.ChangeFeed;
using Registry.Leases;
using Registry.Model;
using Registry.State;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// Every node serves what the database holds, and a provider that heartbeats is never evicted:
/// the interleavings that broke both promises, forced with transactions held open, a proxy cut
/// and nodes started and stopped.
/// </summary>
public sealed class ConsistencyTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    [Fact]
    public async Task ARowCommittedWithALowerRevisionThanOneAlreadyLoadedReachesParkedPollsOnAnotherNode()
    {
        await RegisterAsync(Client, "ooo", "1.1.1.1:80", """{"v":"1"}""");
        await RegisterAsync(Client, "ooo", "1.1.1.2:80", """{"v":"1"}""");
        using var nodeB = Cluster.NodeB.CreateClient();
        var subscription = Http.Subscription(Http.Entry("ooo"));
        var version = await ConvergedVersionAsync(nodeB, subscription, count: 2);

        // Two writers draw revisions in one order and commit in the other, each announcing the
        // whole application, as a batch too large to list its instances does.
        await using var first = await Cluster.OpenAsync();
        await using var second = await Cluster.OpenAsync();
        await using var lower = await first.BeginTransactionAsync();
        await ExecuteAsync(first, lower, """UPDATE instances SET meta = '{"v":"2"}', revision = nextval('instance_revision') WHERE application = 'ooo' AND addr = '1.1.1.1:80'""");
        await using (var higher = await second.BeginTransactionAsync())
        {
            await ExecuteAsync(second, higher, """UPDATE instances SET meta = '{"v":"9"}', revision = nextval('instance_revision') WHERE application = 'ooo' AND addr = '1.1.1.2:80'""");
            await ExecuteAsync(second, higher, "SELECT pg_notify('registry_changes', 'ooo')");
            await higher.CommitAsync();
        }

        version = (await nodeB.SubscribeAsync(subscription, version, wait: 10)).Version!;
        using var parked = ParkedPolls.On(Cluster.NodeB);
        var poll = nodeB.SubscribeAsync(subscription, version, wait: 10);
        await parked.WaitForAsync(1);
        await ExecuteAsync(first, lower, "SELECT pg_notify('registry_changes', 'ooo')");
        await lower.CommitAsync();

        var (_, after, body) = await poll.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.NotEqual(version, after);
        Assert.Equal(["2", "9"], body!["endpoints"]!.AsArray().Select(e => (string?)e!["meta"]!["v"]));
    }

    /// <summary>
    /// This node's batch commits, a later write to the same row commits and is read by the node,
    /// and only then does the batch's own notification reach the loader (it was queued behind
    /// that read): applying the rows the batch returned would take memory back to the older
    /// write until the next change. The batch is run by hand to hold its notification back.
    /// </summary>
    [Fact]
    public async Task ABatchsOwnRowsArrivingAfterAReadOfALaterWriteDoNotTakeTheNodeBack()
    {
        await using var own = await OwnNode.StartAsync(Cluster, "late");
        var (client, subscription, version, loader, connection) = (own.Client, own.Subscription, own.Version, own.Loader, own.Connection);

        // The node's batch: expected, committed, its notification not yet sent.
        var batch = loader.Expect();
        var row = await UpdateLateAsync(connection, "1");

        // Another node's later write, announced at once: the node reads it.
        await ExecuteAsync(connection, null, """
            UPDATE instances SET meta = '{"v":"2"}', revision = nextval('instance_revision') WHERE application = 'late' AND addr = '1.1.1.1:80';
            SELECT pg_notify('registry_changes', 'late' || chr(10) || 'http 1.1.1.1:80');
            """);
        var (_, later, body) = await client.SubscribeAsync(subscription, version, wait: 10).WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal("2", (string?)body!["endpoints"]![0]!["meta"]!["v"]);

        // Now the batch's own notification, with the rows its statement returned.
        loader.Settled(batch, ChangesOf(row));
        await ExecuteAsync(connection, null, $"SELECT pg_notify('registry_changes', 'late {batch.Tag}' || chr(10) || 'http 1.1.1.1:80')");
        await batch.Applied.Task.WaitAsync(TimeSpan.FromSeconds(10));

        var (_, now, answer) = await client.SubscribeAsync(subscription);
        Assert.Equal("2", (string?)answer!["endpoints"]![0]!["meta"]!["v"]);
        Assert.Equal(later, now);
    }

    /// <summary>
    /// The node's read of its own batch's rows fails (a cancelled statement, a pooled connection
    /// ended by an administrator) while its next batch to the same row is announced; the failed
    /// request is queued again, behind that later notification. Applying both batches' own rows
    /// in queue order would leave memory at the older one (v1 while the database holds v2) until
    /// the next change or consistency check: a request queued again is read afresh instead.
    /// </summary>
    [Fact]
    public async Task AnOwnNotificationQueuedAgainAfterAFailedReadDoesNotTakeTheNodeBehindALaterBatch()
    {
        await using var own = await OwnNode.StartAsync(Cluster, "late");
        var (client, subscription, loader, connection) = (own.Client, own.Subscription, own.Loader, own.Connection);
        using var notifications = MeterWatch.Node(own.Node, "registry.changefeed.notifications");
        var first = loader.Expect();
        var v1 = await UpdateLateAsync(connection, "1");
        var second = loader.Expect();
        var v2 = await UpdateLateAsync(connection, "2");

        // The first batch's notification comes before the batch is settled: its rows are read, and the read waits.
        await using var locker = new NpgsqlConnection(own.Database);
        await locker.OpenAsync();
        await using var locked = await locker.BeginTransactionAsync();
        await ExecuteAsync(locker, locked, "LOCK TABLE instances IN ACCESS EXCLUSIVE MODE");
        await ExecuteAsync(connection, null, $"SELECT pg_notify('registry_changes', 'late {first.Tag}' || chr(10) || 'http 1.1.1.1:80')");
        var read = await Backends.WaitingForALockAsync(own.Database, "%JOIN unnest%");

        // Both batches settle, the second's notification queues, and the read fails.
        loader.Settled(first, ChangesOf(v1));
        loader.Settled(second, ChangesOf(v2));
        await ExecuteAsync(connection, null, $"SELECT pg_notify('registry_changes', 'late {second.Tag}' || chr(10) || 'http 1.1.1.1:80')");
        await notifications.WaitForAsync(2);
        await ExecuteAsync(connection, null, $"SELECT pg_cancel_backend({read})");
        await locked.RollbackAsync();
        await Task.WhenAll(first.Applied.Task, second.Applied.Task).WaitAsync(TimeSpan.FromSeconds(10));

        var (_, _, answer) = await client.SubscribeAsync(subscription);
        Assert.Equal("2", (string?)answer!["endpoints"]![0]!["meta"]!["v"]);
    }

    /// <summary>
    /// A change the loader has applied is published before its next query, which may wait as long
    /// as the database does (here a lock; a failover, a stall): reads and polls of the changed
    /// application are answered from memory meanwhile. Before, they waited for the unrelated query.
    /// </summary>
    [Fact]
    public async Task AnAppliedChangeIsServedWhileTheLoaderWaitsOnAQueryAboutAnotherApplication()
    {
        await using var own = await OwnNode.StartAsync(Cluster, "late");
        await using var held = await HeldLoader.StartAsync(own, "other");

        // The parked consumer is answered, and a read is served from memory, while the loader waits.
        var (_, _, woken) = await held.Poll.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("1", (string?)woken!["endpoints"]![0]!["meta"]!["v"]);
        var (_, _, answer) = await own.Client.SubscribeAsync(own.Subscription).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("1", (string?)answer!["endpoints"]![0]!["meta"]!["v"]);
        await Backends.WaitingForALockAsync(own.Database, "%ANY(%");
    }

    /// <summary>
    /// A pass that applies a batch's own rows of an application and must also read that application
    /// (another node's change to it) publishes nothing of it before the read: consumers would get
    /// this node's batch without the other change, a state the database never held.
    /// </summary>
    [Fact]
    public async Task AnApplicationAlsoToBeReadIsNotPublishedHalfApplied()
    {
        await using var own = await OwnNode.StartAsync(Cluster, "late");
        await using var held = await HeldLoader.WithAnotherChangeToLateAsync(own);

        await Backends.WaitingForALockAsync(own.Database, "%ANY(%");
        Assert.NotSame(held.Poll, await Task.WhenAny(held.Poll, Task.Delay(TimeSpan.FromMilliseconds(500)))); // nothing half-applied comes meanwhile
        await held.ReleaseAsync();
        var (_, _, woken) = await held.Poll.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(["1.1.1.1:80", "2.2.2.2:80"], woken!["endpoints"]!.AsArray().Select(e => (string?)e!["addr"]));
        Assert.Equal("1", (string?)woken["endpoints"]![0]!["meta"]!["v"]);
    }

    /// <summary>
    /// As above, and that read fails (a cancelled statement, a connection ended): the failed pass publishes nothing
    /// of the application either. Before, it had applied the batch's rows ahead of the read and published them at
    /// its end, without the other change, until its retry read the application 500 ms later.
    /// </summary>
    [Fact]
    public async Task AnApplicationWhoseReadFailsIsNotPublishedHalfApplied()
    {
        await using var own = await OwnNode.StartAsync(Cluster, "late");
        await using var held = await HeldLoader.WithAnotherChangeToLateAsync(own);
        using var failures = MeterWatch.Node(own.Node, "registry.database.errors", "operation", "reload");

        await ExecuteAsync(own.Connection, null, $"SELECT pg_cancel_backend({await Backends.WaitingForALockAsync(own.Database, "%ANY(%")})");
        await failures.WaitForAsync(1);
        // The failed pass has published what it applied; its retry waits 500 ms, then on the lock again.
        Assert.NotSame(held.Poll, await Task.WhenAny(held.Poll, Task.Delay(TimeSpan.FromMilliseconds(400))));
        await held.ReleaseAsync();
        var (_, _, woken) = await held.Poll.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(["1.1.1.1:80", "2.2.2.2:80"], woken!["endpoints"]!.AsArray().Select(e => (string?)e!["addr"]));
        Assert.Equal("1", (string?)woken["endpoints"]![0]!["meta"]!["v"]);
    }

    /// <summary>The node's loader held in a read by a table lock, with a consumer parked on "late" and changes queued behind the read.</summary>
    private sealed class HeldLoader(NpgsqlConnection locker, NpgsqlTransaction locked, Task<(int Status, string? Version, JsonNode? Body)> poll) : IAsyncDisposable
    {
        /// <summary>The consumer parked on "late" before the change.</summary>
        public Task<(int Status, string? Version, JsonNode? Body)> Poll { get; } = poll;

        /// <summary>
        /// Parks a consumer on "late" and settles a batch of the node's changing it to v1; holds the loader in a read of
        /// another application, queues the batch's notification and one of <paramref name="other"/> behind it, and fails
        /// that read: the next pass applies the batch's rows, then waits on its reads.
        /// </summary>
        public static async Task<HeldLoader> StartAsync(OwnNode own, string other)
        {
            using var notifications = MeterWatch.Node(own.Node, "registry.changefeed.notifications");
            using var parked = ParkedPolls.On(own.Node);
            var poll = own.Client.SubscribeAsync(own.Subscription, own.Version, wait: 50);
            await parked.WaitForAsync(1);
            var batch = own.Loader.Expect();
            own.Loader.Settled(batch, ChangesOf(await UpdateLateAsync(own.Connection, "1")));

            var locker = new NpgsqlConnection(own.Database);
            await locker.OpenAsync();
            var locked = await locker.BeginTransactionAsync();
            await ExecuteAsync(locker, locked, "LOCK TABLE instances IN ACCESS EXCLUSIVE MODE");
            await ExecuteAsync(own.Connection, null, "SELECT pg_notify('registry_changes', 'blocker')");
            var blocked = await Backends.WaitingForALockAsync(own.Database, "%ANY(%");
            await using (var queue = new NpgsqlCommand("SELECT pg_notify('registry_changes', @own); SELECT pg_notify('registry_changes', @other)", own.Connection))
            {
                queue.Parameters.AddWithValue("own", $"late {batch.Tag}\nhttp 1.1.1.1:80");
                queue.Parameters.AddWithValue("other", other);
                await queue.ExecuteNonQueryAsync();
            }

            await notifications.WaitForAsync(3);
            await ExecuteAsync(own.Connection, null, $"SELECT pg_cancel_backend({blocked})");
            return new HeldLoader(locker, locked, poll);
        }

        /// <summary>As <see cref="StartAsync"/>, the other change another node's new instance of "late" (2.2.2.2:80), committed unannounced until then.</summary>
        public static async Task<HeldLoader> WithAnotherChangeToLateAsync(OwnNode own)
        {
            await ExecuteAsync(own.Connection, null, """
                INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
                VALUES ('late', 'http', '2.2.2.2:80', '{}', 600, clock_timestamp() + interval '600 seconds', clock_timestamp())
                """);
            return await StartAsync(own, "late\nhttp 2.2.2.2:80");
        }

        public Task ReleaseAsync() => locked.RollbackAsync();

        public async ValueTask DisposeAsync()
        {
            await locked.DisposeAsync();
            await locker.DisposeAsync();
        }
    }

    /// <summary>Changes the instance of "late" as a batch of the node's would; returns the row as the batch's statement would.</summary>
    private static async Task<Instance> UpdateLateAsync(NpgsqlConnection connection, string v)
    {
        await using var update = new NpgsqlCommand(
            """
            UPDATE instances SET meta = jsonb_build_object('v', @v), revision = nextval('instance_revision')
             WHERE application = 'late' AND addr = '1.1.1.1:80' RETURNING ttl_seconds, expires_at, revision
            """, connection);
        update.Parameters.AddWithValue("v", v);
        await using var reader = await update.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync());
        return new Instance(new InstanceKey("late", "http", "1.1.1.1:80"), Meta.From([new("v", v)]), reader.GetInt32(0), reader.GetFieldValue<DateTimeOffset>(1), reader.GetInt64(2));
    }

    private static Dictionary<string, Changes> ChangesOf(Instance row)
    {
        var changes = new Changes();
        changes.Add(row.Key, row);
        return new Dictionary<string, Changes> { [row.Key.Application] = changes };
    }

    /// <summary>
    /// A node remembers when it last read each application, for its own batches to ask whether a
    /// read came after them; names come and go (an application per job or per deploy). Reads a
    /// pending batch can ask about are kept; once none can, they are forgotten, so the node does
    /// not hold every name it ever read.
    /// </summary>
    [Fact]
    public async Task ANodeRemembersReadsOnlyWhileOneOfItsBatchesCanAskAboutThem()
    {
        await using var own = await OwnNode.StartAsync(Cluster, "marker");
        var (node, client, subscription, version, loader, connection) = (own.Node, own.Client, own.Subscription, own.Version, own.Loader, own.Connection);

        // Other nodes' changes to many applications, then one a parked poll waits for:
        // notifications are applied in order, so once it is answered all were read.
        async Task ChangesAsync(string prefix, int applications)
        {
            using var parked = ParkedPolls.On(node);
            var poll = client.SubscribeAsync(subscription, version, wait: 10);
            await parked.WaitForAsync(1);
            await ExecuteAsync(connection, null, $"""
                SELECT pg_notify('registry_changes', '{prefix}-' || g) FROM generate_series(1, {applications}) g;
                UPDATE instances SET meta = jsonb_build_object('v', '{prefix}'), revision = nextval('instance_revision') WHERE application = 'marker';
                SELECT pg_notify('registry_changes', 'marker');
                """);
            version = (await poll.WaitAsync(TimeSpan.FromSeconds(15))).Version!;
        }

        var batch = loader.Expect();
        await ChangesAsync("job", 3000);
        Assert.True(loader.ReadsRemembered > 3000, $"{loader.ReadsRemembered} reads remembered while a batch could ask");

        // More than were remembered, however the loader's batches split them: it forgets at
        // twice what it kept the last time.
        loader.Abandon(batch);
        await ChangesAsync("deploy", 4000);
        Assert.InRange(loader.ReadsRemembered, 0, RegistryLoader.ForgetReadsFrom - 1);
    }

    [Fact]
    public async Task ANodeCutOffFromItsFeedDatesItsAnswersFromWhenTheFeedLastWorkedAndClosesTheConnection()
    {
        // Clients compare a stale node's answer with what they hold by its Age (after a failover):
        // dated from when the loss was noticed, an idle check and its timeout later, it looked newer than it was.
        var database = await Cluster.CreateDatabaseAsync();
        await using var proxy = new TcpProxy(database);
        await using var node = new RegistryNode(proxy.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:ChangeFeed:CheckTimeout"] = "00:00:01",
            ["Registry:Database:ConnectTimeoutSeconds"] = "1",
            ["Registry:Database:CommandTimeoutSeconds"] = "1",
        });
        using var lost = MeterWatch.Node(node, "registry.database.errors", "operation", "change_feed");
        using var client = node.CreateClient();
        using (var fresh = await client.GetAsync(new Uri("/v1/services/aged", UriKind.Relative)))
        {
            Assert.False(fresh.Headers.Contains("X-Registry-Stale"));
            Assert.NotEqual(true, fresh.Headers.ConnectionClose);
        }

        proxy.Stall();
        var cut = DateTime.UtcNow;
        await lost.WaitForAsync(1, TimeSpan.FromSeconds(30));
        var elapsed = DateTime.UtcNow - cut;
        using var stale = await client.GetAsync(new Uri("/v1/services/aged", UriKind.Relative));

        Assert.Equal("true", stale.Headers.GetValues("X-Registry-Stale").Single());
        // Whole seconds, rounded down, and at least as old as the cut.
        Assert.True(stale.Headers.Age > elapsed - TimeSpan.FromSeconds(1), $"Age {stale.Headers.Age} {elapsed} after the cut");
        // Behind a load balancer, the next poll goes out on a new connection: to another node, as likely as not.
        Assert.True(stale.Headers.ConnectionClose);
        // The route back, so the node stops without waiting on dead connections.
        await proxy.CutAsync();
        proxy.Start();
    }

    [Fact]
    public async Task TheConsistencyCheckRepairsARowChangedWithoutANotificationWhateverItsRevision()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:ChangeFeed:ConsistencyCheckInterval"] = "00:00:00.300",
        });
        using var client = node.CreateClient();
        await RegisterAsync(client, "quiet", "1.1.1.1:80", """{"v":"1"}""");
        await RegisterAsync(client, "quiet", "1.1.1.2:80", """{"v":"1"}""");
        var subscription = Http.Subscription(Http.Entry("quiet"));
        var (_, version, _) = await client.SubscribeAsync(subscription);

        // Same count, same maximum revision: only the content tells that the node is stale.
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await ExecuteAsync(connection, null, """
                UPDATE instances SET meta = '{"v":"2"}', revision = revision - 1
                 WHERE application = 'quiet' AND addr = '1.1.1.1:80'
                """);
        }

        var (_, after, body) = await client.SubscribeAsync(subscription, version, wait: 10).WaitAsync(TimeSpan.FromSeconds(15));
        Assert.NotEqual(version, after);
        Assert.Equal("2", (string?)body!["endpoints"]![0]!["meta"]!["v"]);
    }

    [Fact]
    public async Task AnIdenticalRegistrationOfARowMemoryHasNotYetLoadedIsServedOnceAnswered()
    {
        // The row came from another node whose notification this node has not applied yet (in flight,
        // or the feed reconnecting; here: written without one). Registering it again unchanged keeps
        // its revision and notifies nobody, yet the answer must mean this node serves it, as for any
        // write it acknowledges: before, it answered 200 and its lists and heartbeats (404) did not know it.
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:ChangeFeed:ConsistencyCheckInterval"] = "01:00:00",
        });
        using var client = node.CreateClient();
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await ExecuteAsync(connection, null, """
                INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
                VALUES ('unseen', 'http', '1.1.1.1:80', '{"v":"1"}', 30, clock_timestamp() + interval '30 seconds', clock_timestamp())
                """);
        }

        using (var again = await client.PostJsonAsync("/v1/register?ttl=30", Http.Provider("unseen", "1.1.1.1:80", """{"v":"1"}""")))
        {
            Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        }

        using var listed = await client.GetAsync("/v1/services/unseen");
        Assert.Single((await listed.ReadJsonAsync())["endpoints"]!.AsArray());
        using var heartbeat = await client.PostJsonAsync("/v1/heartbeat", Http.Provider("unseen", "1.1.1.1:80"));
        Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode);
    }

    [Fact]
    public async Task TheContentDigestInMemoryIsTheOneTheDatabaseComputes()
    {
        await RegisterAsync(Client, "digest", "10.0.0.2:80", "{}", "http");
        await RegisterAsync(Client, "digest", "10.0.0.1:80", "{}", "grpc");
        await RegisterAsync(Client, "digest", "10.0.0.10:80", "{}", "http");

        await using var connection = await Cluster.OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT {ApplicationSnapshot.ContentDigestSql} FROM instances WHERE application = 'digest'", connection);
        var inDatabase = (string)(await command.ExecuteScalarAsync())!;

        Assert.Equal(inDatabase, Node.Get<RegistryState>().Get("digest")!.ContentDigest);
    }

    [Fact]
    public async Task AHeartbeatAfterAnotherNodeShortenedTheLeaseRenewsItInTheDatabase()
    {
        var key = new InstanceKey("stale", "http", "1.1.1.10:80");
        await RegisterAsync(Client, key.Application, key.Addr, "{}", ttl: 600);
        using var reloads = MeterWatch.Node(Node, "registry.changefeed.reloads");
        using (var nodeB = Cluster.NodeB.CreateClient())
        {
            await RegisterAsync(nodeB, key.Application, key.Addr, "{}", ttl: 2);
        }

        await reloads.WaitUntilAsync(_ => Node.Get<RegistryState>().Find(key)?.TtlSeconds == 2);
        var registeredUntil = await ExpiresAtAsync(key);

        // Past half of the 2 s lease, a heartbeat must be written: node A's own 600 s write
        // is no longer what the database holds.
        var halfGone = registeredUntil - DateTimeOffset.UtcNow - TimeSpan.FromSeconds(0.8);
        if (halfGone > TimeSpan.Zero)
        {
            await Task.Delay(halfGone);
        }

        using var written = MeterWatch.Node(Node, "registry.heartbeats.written");
        using (var heartbeat = await Client.PostJsonAsync("/v1/heartbeat", Http.Provider(key.Application, key.Addr)))
        {
            Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode);
            var expires = DateTimeOffset.Parse((string)(await heartbeat.ReadJsonAsync())["expires"]!, System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(expires < registeredUntil + TimeSpan.FromSeconds(5), $"reported {expires:O}, the database holds about {registeredUntil:O}");
        }

        await written.WaitForAsync(1);
        Assert.True(await ExpiresAtAsync(key) > registeredUntil);
    }

    [Fact]
    public async Task HeartbeatsThroughANodeCutOffFromTheDatabaseAreRefusedBeforeTheLeaseRunsOut()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var proxy = new TcpProxy(database);
        await using var cutOff = new RegistryNode(proxy.ConnectionString);
        await using var healthy = new RegistryNode(database);
        using var client = cutOff.CreateClient();
        using var other = healthy.CreateClient();
        await RegisterAsync(client, "island", "1.1.1.20:80", "{}", ttl: 4);
        var registeredUntil = await ExpiresAtAsync(database, new InstanceKey("island", "http", "1.1.1.20:80"));

        await proxy.CutAsync();
        HttpResponseMessage refused;
        while (true)
        {
            var response = await client.PostJsonAsync("/v1/heartbeat", Http.Provider("island", "1.1.1.20:80"));
            if (response.StatusCode != HttpStatusCode.OK)
            {
                refused = response;
                break;
            }

            response.Dispose();
            Assert.True(DateTimeOffset.UtcNow < registeredUntil, "the cut-off node kept answering 200 past the lease's end in the database");
            await Task.Delay(TimeSpan.FromMilliseconds(250));
        }

        using (refused)
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            Assert.NotNull(refused.Headers.RetryAfter);
            Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        }

        // Refused in time for the provider to fail over: the healthy node records it.
        Assert.True(DateTimeOffset.UtcNow < registeredUntil - TimeSpan.FromSeconds(0.5), $"refused only at {DateTimeOffset.UtcNow:O}, lease ends {registeredUntil:O}");
        using (var failover = await other.PostJsonAsync("/v1/heartbeat", Http.Provider("island", "1.1.1.20:80")))
        {
            Assert.Equal(HttpStatusCode.OK, failover.StatusCode);
        }
    }

    [Fact]
    public async Task ANodeStartingDoesNotReviveLeasesButAClusterWideOutageDoes()
    {
        var database = await Cluster.CreateDatabaseAsync();
        var key = new InstanceKey("dying", "http", "1.1.1.30:80");
        await using (var running = new RegistryNode(database))
        {
            using var client = running.CreateClient();
            await RegisterAsync(client, key.Application, key.Addr, "{}", ttl: 30);
            var registeredUntil = await ExpiresAtAsync(database, key);

            // Another node starts and stops while this one records: nobody owes grace.
            await using (var restarted = new RegistryNode(database))
            {
                using var rounds = MeterWatch.Node(restarted, "registry.sweeps");
                await rounds.WaitForAsync(2);
            }

            Assert.Equal(registeredUntil, await ExpiresAtAsync(database, key));
        }

        // Now no node runs for longer than the grace gap (2 s in the tests): the lease was live
        // when that began, so the next node to start extends it... (A statement a stopped node's
        // host gave up waiting for may still be running on a loaded machine: it is ended first, or
        // its mark could land after the gap is made.)
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await ExecuteAsync(connection, null, """
                SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid();
                UPDATE nodes SET last_seen_at = clock_timestamp() - interval '10 seconds';
                INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
                VALUES ('dying', 'http', '1.1.1.31:80', '{}', 30, clock_timestamp() - interval '20 seconds', clock_timestamp());
                """);
        }

        var before = await ExpiresAtAsync(database, key);
        await using var sweeps = await NotificationListener.StartAsync(database);
        await using var cold = new RegistryNode(database);
        _ = cold.Server;
        // Settled by the node's first mark, as it starts; should that statement fail (a loaded
        // database refusing a connection), by the next mark or sweep, before anything is swept.
        var after = await ExpiresAtAsync(database, key);
        for (var deadline = DateTime.UtcNow.AddSeconds(10); after <= before && DateTime.UtcNow < deadline; after = await ExpiresAtAsync(database, key))
        {
            await Task.Delay(50);
        }

        Assert.True(after > before, $"before {before:O} after {after:O}; nodes: {await NodesAsync(database)}");

        // ...but one that had run out before the gap began stays expired and is swept.
        await sweeps.WaitForAsync("dying");
        Assert.Equal(["dying\nhttp 1.1.1.31:80"], sweeps.Payloads("dying"));
        await using var check = new NpgsqlConnection(database);
        await check.OpenAsync();
        await using var count = new NpgsqlCommand("SELECT count(*) FROM instances WHERE addr = '1.1.1.31:80'", check);
        Assert.Equal(0L, (long)(await count.ExecuteScalarAsync())!);
    }

    private static async Task<string> NodesAsync(string database)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT string_agg(id || ' seen ' || last_seen_at || ' left ' || coalesce(left_at::text, '-'), '; ') || ' now ' || clock_timestamp() FROM nodes", connection);
        return (string)(await command.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task SelfPreservationsBudgetHoldsForTheClusterWhicheverNodeSweeps()
    {
        var database = await Cluster.CreateDatabaseAsync();
        var settings = new Dictionary<string, string?>
        {
            ["Registry:Leases:SelfPreservationShare"] = "0.2",
            ["Registry:Leases:SelfPreservationMinInstances"] = "2",
            ["Registry:Leases:SelfPreservationWindow"] = "00:10:00",
        };
        await using var first = new RegistryNode(database, settings);
        await using var second = new RegistryNode(database, settings);
        using var evictedFirst = MeterWatch.Node(first, "registry.evictions");
        using var evictedSecond = MeterWatch.Node(second, "registry.evictions");
        using var auditedFirst = MeterWatch.Node(first, "registry.audit.events", "action", "evict");
        using var auditedSecond = MeterWatch.Node(second, "registry.audit.events", "action", "evict");
        using var sweepsFirst = MeterWatch.Node(first, "registry.sweeps", "outcome", "swept");
        using var sweepsSecond = MeterWatch.Node(second, "registry.sweeps", "outcome", "swept");
        using var client = first.CreateClient();
        for (var i = 0; i < 20; i++)
        {
            await RegisterAsync(client, "fleet", $"10.0.0.{i + 1}:80", "{}", ttl: 600);
        }

        // Half the fleet runs out at once (announced, as a registration would, so both nodes
        // know when to sweep)...
        await using var notifications = await NotificationListener.StartAsync(database);
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await ExecuteAsync(connection, null, """
                UPDATE instances SET expires_at = clock_timestamp(), ttl_seconds = 1, revision = nextval('instance_revision')
                 WHERE split_part(split_part(addr, '.', 4), ':', 1)::int <= 10;
                SELECT pg_notify('registry_changes', 'fleet');
                """);
        }

        // ...and of 20 live, 4 (20%) go in the window, whichever node sweeps and however often.
        await notifications.WaitUntilAsync("fleet", payloads => payloads > 1);
        var swept = (sweepsFirst.Total, sweepsSecond.Total);
        await Task.WhenAll(sweepsFirst.WaitForAsync(swept.Item1 + 3), sweepsSecond.WaitForAsync(swept.Item2 + 3));

        Assert.Equal(4, evictedFirst.Total + evictedSecond.Total);
        Assert.Equal(4, auditedFirst.Total + auditedSecond.Total); // each eviction audited, by the sweeper
    }

    private static async Task RegisterAsync(HttpClient client, string application, string addr, string meta, string protocol = "http", int? ttl = null)
    {
        using var response = await client.PostJsonAsync(ttl is null ? "/v1/register" : $"/v1/register?ttl={ttl}", Http.Provider(application, addr, meta, protocol));
        response.EnsureSuccessStatusCode();
    }

    private static Task RegisterAsync(HttpClient client, string application, string addr, string meta, int ttl) =>
        RegisterAsync(client, application, addr, meta, "http", ttl);

    /// <summary>The version once the node serves <paramref name="count"/> endpoints.</summary>
    private static async Task<string> ConvergedVersionAsync(HttpClient client, string subscription, int count)
    {
        var (_, version, body) = await client.SubscribeAsync(subscription);
        while (body!["endpoints"]!.AsArray().Count != count)
        {
            (_, version, body) = await client.SubscribeAsync(subscription, version, wait: 5).WaitAsync(TimeSpan.FromSeconds(10));
        }

        return version!;
    }

    /// <summary>A node over a database of its own, one instance of an application registered and read once, and a connection to that database.</summary>
    private sealed class OwnNode : IAsyncDisposable
    {
        private OwnNode(string database, RegistryNode node, NpgsqlConnection connection, string subscription)
        {
            Database = database;
            Node = node;
            Client = node.CreateClient();
            Connection = connection;
            Subscription = subscription;
        }

        public string Database { get; }

        public RegistryNode Node { get; }

        public HttpClient Client { get; }

        public NpgsqlConnection Connection { get; }

        public string Subscription { get; }

        /// <summary>The version the subscription had once the instance was registered.</summary>
        public string Version { get; private set; } = "";

        public RegistryLoader Loader => Node.Get<RegistryLoader>();

        public static async Task<OwnNode> StartAsync(RegistryCluster cluster, string application)
        {
            var database = await cluster.CreateDatabaseAsync();
            var connection = new NpgsqlConnection(database);
            await connection.OpenAsync();
            var own = new OwnNode(database, new RegistryNode(database), connection, Http.Subscription(Http.Entry(application)));
            await RegisterAsync(own.Client, application, "1.1.1.1:80", """{"v":"0"}""");
            own.Version = (await own.Client.SubscribeAsync(own.Subscription)).Version!;
            return own;
        }

        public async ValueTask DisposeAsync()
        {
            Client.Dispose();
            await Node.DisposeAsync();
            await Connection.DisposeAsync();
        }
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, NpgsqlTransaction? transaction, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection, transaction);
        await command.ExecuteNonQueryAsync();
    }

    private Task<DateTimeOffset> ExpiresAtAsync(InstanceKey key) => ExpiresAtAsync(Cluster.ConnectionString, key);

    private static async Task<DateTimeOffset> ExpiresAtAsync(string database, InstanceKey key)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT expires_at FROM instances WHERE application = @a AND protocol = @p AND addr = @addr", connection);
        command.Parameters.AddWithValue("a", key.Application);
        command.Parameters.AddWithValue("p", key.Protocol);
        command.Parameters.AddWithValue("addr", key.Addr);
        return new DateTimeOffset((DateTime)(await command.ExecuteScalarAsync())!, TimeSpan.Zero);
    }
}
