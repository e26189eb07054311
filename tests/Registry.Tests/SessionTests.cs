using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Registry.Subscription;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// Sessions: a registration that lives as long as one connection. Real nodes on real sockets
/// where the connection itself is the subject (closing it, killing its process, a node dying).
/// </summary>
public sealed class SessionTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private static readonly string Provider = Http.Provider("app", "10.0.0.1:80", """{"zone":"a"}""");
    private static readonly string Subscription = Http.Subscription(Http.Entry("app"));

    [Fact]
    public async Task ASessionStreamsItsLeaseFirstThenAKeepAliveCommentEveryInterval()
    {
        await using var session = await SessionReader.StartAsync(Client, Provider, ttl: 10);

        Assert.Equal("text/event-stream", session.Response.Content.Headers.ContentType?.MediaType);
        // KeepAliveSeconds is 1 in the test settings: the stream says how often something comes.
        Assert.Equal(["1"], session.Response.Headers.GetValues("X-Registry-Keep-Alive"));
        var lease = await session.ReadAsync();
        Assert.Equal("lease", lease?.Name);
        var document = JsonNode.Parse(lease!.Value.Data)!;
        Assert.Equal("app", (string?)document["application"]);
        Assert.Equal("10.0.0.1:80", (string?)document["addr"]);
        Assert.Equal("a", (string?)document["meta"]!["zone"]);
        Assert.Equal(10, (int)document["ttl"]!);
        Assert.True(DateTimeOffset.Parse((string)document["expires"]!, System.Globalization.CultureInfo.InvariantCulture) > DateTimeOffset.UtcNow.AddSeconds(5));

        // KeepAliveSeconds is 1 in the test settings (5 by default). Timed over three intervals:
        // a late read of the first comment (a busy machine) then shortens or stretches the
        // measure by a third as much as it would one interval.
        Assert.Equal((":", "keep-alive"), await session.ReadAsync());
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal((":", "keep-alive"), await session.ReadAsync());
        }

        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(2.1), TimeSpan.FromSeconds(9));

        var (_, _, answer) = await Client.SubscribeAsync(Subscription);
        Assert.Equal("a", (string?)Assert.Single(answer!["endpoints"]!.AsArray())!["meta"]!["zone"]);
    }

    [Fact]
    public async Task ASessionWhoseTtlIsShorterThanThreeKeepAlivesGetsOneEveryThirdOfIt()
    {
        // Keep-alives 30 s apart against a 9 s lease: a client giving up after three silent intervals would
        // notice a half-open connection only long after the lease had run out.
        await using var node = new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?> { ["Registry:Sessions:KeepAliveSeconds"] = "30" });
        using var client = node.CreateClient();
        await using var session = await SessionReader.StartAsync(client, Http.Provider("app", "10.0.0.7:80"), ttl: 9);

        Assert.Equal(["3"], session.Response.Headers.GetValues("X-Registry-Keep-Alive"));
        Assert.Equal("lease", (await session.ReadAsync())?.Name);
        var clock = Stopwatch.StartNew();
        Assert.Equal((":", "keep-alive"), await session.ReadAsync(TimeSpan.FromSeconds(10)));
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(6));
    }

    [Fact]
    public async Task AnOpenSessionKeepsItsLeaseRenewedWithoutHeartbeats()
    {
        await using var session = await SessionReader.StartAsync(Client, Provider, ttl: 2);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);

        // Three keep-alives: past the 2 s lease, which only renewals can have kept.
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(":", (await session.ReadAsync())?.Name);
        }

        await using var connection = await Cluster.OpenAsync();
        await using var query = new NpgsqlCommand("SELECT expires_at > clock_timestamp() FROM instances WHERE addr = '10.0.0.1:80'", connection);
        Assert.Equal(true, await query.ExecuteScalarAsync());
        var (_, _, answer) = await Client.SubscribeAsync(Subscription);
        Assert.Single(answer!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task ClosingTheConnectionRemovesTheInstanceAndWakesAParkedConsumerWithinASecond()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 1);
        using var client = nodes.Client(0);
        var session = await SessionReader.StartAsync(client, Provider);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);
        var (_, version, _) = await client.SubscribeAsync(Subscription);
        using var parked = ParkedPolls.On(nodes[0]);
        var poll = client.SubscribeAsync(Subscription, version, wait: 30);
        await parked.WaitForAsync(1);

        var clock = Stopwatch.StartNew();
        await session.DisposeAsync();
        var (_, after, answer) = await poll.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.NotEqual(version, after);
        Assert.Empty(answer!["endpoints"]!.AsArray());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"took {clock.Elapsed}");
    }

    /// <summary>
    /// Many sessions close at once (a fleet scaled down) while the write queue is full: before, a removal that found no
    /// room was dropped, and its instance stayed listed until its lease ran out. Now it waits for room.
    /// </summary>
    [Fact]
    public async Task ClosedSessionsAreRemovedWhenTheWriteQueueIsFullForAMoment()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 1, new() { ["Registry:Writes:MaxQueueLength"] = "1" });
        using var client = nodes.Client(0);
        var sessions = new List<SessionReader>();
        for (var i = 1; i <= 4; i++)
        {
            var session = await SessionReader.StartAsync(client, Http.Provider("app", $"10.0.0.{i}:80"), ttl: 60);
            Assert.Equal("lease", (await session.ReadAsync())?.Name);
            sessions.Add(session);
        }

        var (_, version, _) = await client.SubscribeAsync(Subscription);
        await using var locker = new NpgsqlConnection(nodes.ConnectionString);
        await locker.OpenAsync();
        await using var locked = await locker.BeginTransactionAsync();
        await using (var lockTable = new NpgsqlCommand("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE", locker, locked))
        {
            await lockTable.ExecuteNonQueryAsync();
        }

        // The first removal's batch waits for the lock, the second fills the queue, the other two find no room.
        foreach (var session in sessions)
        {
            await session.DisposeAsync();
        }

        await Backends.WaitingForALockAsync(nodes.ConnectionString, "WITH proposed%"); // the write batch's statement
        await locked.RollbackAsync();
        while (true)
        {
            var (_, after, answer) = await client.SubscribeAsync(Subscription, version, wait: 10).WaitAsync(TimeSpan.FromSeconds(15));
            Assert.NotEqual(version, after); // a poll that times out: the rest were never removed
            if (answer!["endpoints"]!.AsArray().Count == 0)
            {
                break;
            }

            version = after;
        }
    }

    /// <summary>
    /// A closed session's removal whose write fails (here a statement timeout behind a row lock; a connection reset or a
    /// failover alike) is tried again: nobody else removes the instance. Before, it was dropped after one failure, and
    /// the instance stayed listed until its lease ran out (a minute here; up to a day as sessions may ask).
    /// </summary>
    [Fact]
    public async Task AClosedSessionsRemovalThatFailsIsTriedAgain()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 1, new() { ["Registry:Database:CommandTimeoutSeconds"] = "1" });
        using var client = nodes.Client(0);
        await using var session = await SessionReader.StartAsync(client, Http.Provider("app", "10.0.0.1:80"), ttl: 60);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);
        var (_, version, _) = await client.SubscribeAsync(Subscription);
        using var failedWrites = MeterWatch.Node(nodes[0], "registry.database.errors", "operation", "write");

        await using var locker = new NpgsqlConnection(nodes.ConnectionString);
        await locker.OpenAsync();
        await using (var locked = await locker.BeginTransactionAsync())
        {
            await using (var lockRow = new NpgsqlCommand("SELECT 1 FROM instances WHERE application = 'app' FOR UPDATE", locker, locked))
            {
                await lockRow.ExecuteNonQueryAsync();
            }

            await session.DisposeAsync();
            await failedWrites.WaitForAsync(1); // the removal's batch waited for the row past its statement timeout
            await locked.RollbackAsync();
        }

        var (_, after, answer) = await client.SubscribeAsync(Subscription, version, wait: 10).WaitAsync(TimeSpan.FromSeconds(15));
        Assert.NotEqual(version, after); // a poll that times out: the removal was never tried again
        Assert.Empty(answer!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task ASessionWhoseProcessIsKilledDisappearsForAConsumerOnAnotherNodeWithinTwoSeconds()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 2);
        using var onB = nodes[1].CreateClient();
        using var watchB = nodes[1].CreateClient();
        var (_, empty, _) = await watchB.SubscribeAsync(Subscription);
        var registered = watchB.SubscribeAsync(Subscription, empty, wait: 30);

        using var curl = StartCurlSession(nodes[0], Provider);
        var (_, version, answer) = await registered.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Single(answer!["endpoints"]!.AsArray());
        using var parked = ParkedPolls.On(nodes[1]);
        var poll = onB.SubscribeAsync(Subscription, version, wait: 30);
        await parked.WaitForAsync(1);

        var clock = Stopwatch.StartNew();
        curl.Kill(); // SIGKILL: no chance to say goodbye; the kernel closes its socket.
        var (_, after, gone) = await poll.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.NotEqual(version, after);
        Assert.Empty(gone!["endpoints"]!.AsArray());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task UnregisteringTheInstanceThroughAnotherNodeEndsTheSessionWithUnregistered()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 2);
        using var onA = nodes[0].CreateClient();
        using var onB = nodes[1].CreateClient();
        await using var session = await SessionReader.StartAsync(onA, Provider);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);

        using (var unregister = await onB.PostJsonAsync("/v1/unregister", Provider))
        {
            Assert.Equal(HttpStatusCode.NoContent, unregister.StatusCode);
        }

        var ended = await session.ReadEventAsync();
        Assert.Equal("ended", ended?.Name);
        Assert.Equal("unregistered", (string?)JsonNode.Parse(ended!.Value.Data)!["reason"]);
        Assert.Null(await session.ReadAsync());
    }

    /// <summary>
    /// The loader held while a session's registration and a removal of its instance commit, so
    /// that it applies both in one pass: the instance is already gone when the session is
    /// answered and starts watching it, and the session still ends, told why.
    /// </summary>
    [Fact]
    public async Task ARemovalAppliedTogetherWithTheSessionsRegistrationEndsItWithUnregistered()
    {
        var held = new HeldRecomposition("held");
        var database = await Cluster.CreateDatabaseAsync();
        await using var registry = new RegistryNode(database);
        await using var node = registry.WithWebHostBuilder(b => b.ConfigureTestServices(s => s.AddSingleton<IChangeWitness>(held)));
        using var client = node.CreateClient();
        using var provider = node.CreateClient();
        var (_, waiting) = await HeldRecomposition.RegisterAndParkAsync(node, client, "held", "10.0.0.8:80");
        await using var notifications = await NotificationListener.StartAsync(database);

        Task<SessionReader> opening;
        Task<HttpResponseMessage> unregistering;
        held.Hold();
        try
        {
            using (var response = await client.PostJsonAsync("/v1/register", Http.Provider("held", "10.0.0.9:80")))
            {
                Assert.Equal(HttpStatusCode.Created, response.StatusCode);
            }

            await held.Entered.WaitAsync(TimeSpan.FromSeconds(10));
            opening = SessionReader.StartAsync(provider, Provider);
            await notifications.WaitUntilAsync("app", n => n == 1);
            unregistering = client.PostJsonAsync("/v1/unregister", Provider);
            await notifications.WaitUntilAsync("app", n => n == 2);
        }
        finally
        {
            held.Release();
        }

        await using var session = await opening.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("lease", (await session.ReadAsync())?.Name);
        using (var unregistered = await unregistering.WaitAsync(TimeSpan.FromSeconds(10)))
        {
            Assert.Equal(HttpStatusCode.NoContent, unregistered.StatusCode);
        }

        var ended = await session.ReadEventAsync().WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal("ended", ended?.Name);
        Assert.Equal("unregistered", (string?)JsonNode.Parse(ended!.Value.Data)!["reason"]);
        await waiting.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task AHeartbeatRegistrationOpenedAsASessionIsReplacedCleanlyAndAReRegistrationElsewhereEndsItWithReplaced()
    {
        using (var register = await Client.PostJsonAsync("/v1/register?ttl=30", Http.Provider("app", "10.0.0.1:80", """{"zone":"old"}""")))
        {
            Assert.Equal(HttpStatusCode.Created, register.StatusCode);
        }

        await using var session = await SessionReader.StartAsync(Client, Provider, ttl: 5);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);
        var (_, version, answer) = await Client.SubscribeAsync(Subscription);
        Assert.Equal("a", (string?)Assert.Single(answer!["endpoints"]!.AsArray())!["meta"]!["zone"]);
        await using (var connection = await Cluster.OpenAsync())
        await using (var query = new NpgsqlCommand("SELECT count(*)::int, min(ttl_seconds) FROM instances", connection))
        await using (var reader = await query.ExecuteReaderAsync())
        {
            await reader.ReadAsync();
            Assert.Equal((1, 5), (reader.GetInt32(0), reader.GetInt32(1)));
        }

        using (var register = await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80", """{"zone":"new"}""")))
        {
            Assert.Equal(HttpStatusCode.OK, register.StatusCode);
        }

        var ended = await session.ReadEventAsync();
        Assert.Equal("replaced", (string?)JsonNode.Parse(ended!.Value.Data)!["reason"]);
        Assert.Null(await session.ReadAsync());
        // The session left the new registration alone.
        var (_, _, now) = await Client.SubscribeAsync(Subscription, version);
        Assert.Equal("new", (string?)Assert.Single(now!["endpoints"]!.AsArray())!["meta"]!["zone"]);
    }

    [Fact]
    public async Task WhenTheNodeHoldingASessionStopsTheInstanceLastsItsTtlAndThenGoes()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 2);
        using var onA = nodes[0].CreateClient();
        using var onB = nodes[1].CreateClient();
        var session = await SessionReader.StartAsync(onA, Provider, ttl: 3);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);

        var clock = Stopwatch.StartNew();
        await nodes.StopAsync(0);
        await session.DisposeAsync();
        var (_, version, answer) = await onB.SubscribeAsync(Subscription);
        Assert.Single(answer!["endpoints"]!.AsArray());

        var (_, after, gone) = await onB.SubscribeAsync(Subscription, version, wait: 30).WaitAsync(TimeSpan.FromSeconds(15));
        Assert.NotEqual(version, after);
        Assert.Empty(gone!["endpoints"]!.AsArray());
        // Its 3 s lease ran out on the database's clock and a sweep took it, not its stream's end.
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1.5), TimeSpan.FromSeconds(8));
    }

    [Fact]
    public async Task SessionsCountAsParkedRequestsAnd429AtTheLimitsEdgeNotBefore()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Limits:MaxParkedPerClient"] = "2",
            ["Registry:Limits:RetryAfterSeconds"] = "7",
        });
        using var client = node.CreateClient();
        await using var first = await SessionReader.StartAsync(client, Http.Provider("app", "10.0.0.1:80"));
        var second = await SessionReader.StartAsync(client, Http.Provider("app", "10.0.0.2:80"));

        var (refused, none) = await SessionReader.OpenAsync(client, Http.Provider("app", "10.0.0.3:80"));
        Assert.Null(none);
        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        Assert.Equal(TimeSpan.FromSeconds(7), refused.Headers.RetryAfter?.Delta);
        var (_, version, _) = await client.SubscribeAsync(Subscription);
        var (pollRefused, _, _) = await client.SubscribeAsync(Subscription, version, wait: 30);
        Assert.Equal(429, pollRefused);

        // A place given back is a place to take.
        using var parkedSessions = MeterWatch.Node(node, "registry.sessions.open");
        await second.DisposeAsync();
        await parkedSessions.WaitUntilAsync(open => open <= -1);
        await using var third = await SessionReader.StartAsync(client, Http.Provider("app", "10.0.0.3:80"));
        Assert.Equal("lease", (await third.ReadAsync())?.Name);
    }

    [Fact]
    public async Task ABadSessionRequestIsAProblemDocumentBeforeAnyStream()
    {
        var (response, stream) = await SessionReader.OpenAsync(Client, Http.Provider("app", "not an address"), ttl: 0);

        Assert.Null(stream);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var errors = (await response.ReadJsonAsync())["errors"]!.AsObject();
        Assert.True(errors.ContainsKey("addr") && errors.ContainsKey("ttl"), errors.ToJsonString());
    }

    [Fact]
    public async Task ASessionWhoseRegistrationNeverReachedMemoryIsReleasedBeforeItsLeaseRunsOut()
    {
        // The session's write commits, but the node can read nothing back: its change feed and its pooled reads are cut
        // off from the database, and only the writer's own connection is left. So the session is answered before memory
        // has shown its registration, and its row then goes (evicted elsewhere) before memory ever catches up.
        var database = await Cluster.CreateDatabaseAsync();
        var name = new NpgsqlConnectionStringBuilder(database).Database!;
        await using var node = new RegistryNode(database);
        using var client = node.CreateClient();
        // Registrations go through a data source of their own: one of its connections is left idle in its pool.
        using (var warm = await client.PostJsonAsync("/v1/register", Http.Provider("warm", "10.0.0.9:80")))
        {
            warm.EnsureSuccessStatusCode();
        }

        await using var admin = await Cluster.OpenAsync();
        await using var inside = new NpgsqlConnection(database);
        await inside.OpenAsync();
        await ExecuteAsync(admin, $"ALTER DATABASE {name} ALLOW_CONNECTIONS false");
        try
        {
            await ExecuteAsync(admin, $"""
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = '{name}' AND pid <> {inside.ProcessID} AND query NOT LIKE '%WITH proposed AS MATERIALIZED%'
                """);
            var feed = node.Services.GetRequiredService<Registry.ChangeFeed.ChangeFeedListener>();
            var deadline = Stopwatch.StartNew();
            while (feed.IsListening)
            {
                Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(10), "the change feed never noticed its connection was gone");
                await Task.Delay(10);
            }

            await using var session = await SessionReader.StartAsync(client, Http.Provider("app", "10.0.0.1:80"), ttl: 2);
            Assert.Equal("lease", (await session.ReadAsync(TimeSpan.FromSeconds(30)))?.Name);
            await ExecuteAsync(inside, "DELETE FROM instances WHERE addr = '10.0.0.1:80'");
            await ExecuteAsync(admin, $"ALTER DATABASE {name} ALLOW_CONNECTIONS true");

            // Before: keep-alives for as long as the connection lasted, with no instance behind them. Now the stream
            // closes (no event: the provider opens its session again, and registers anew) once half the lease has passed.
            var reading = Stopwatch.StartNew();
            var closed = false;
            while (!closed && reading.Elapsed < TimeSpan.FromSeconds(15))
            {
                var next = await session.ReadAsync();
                Assert.True(next is null || next.Value.Name == ":", $"an event instead of the stream's end: {next}");
                closed = next is null;
            }

            Assert.True(closed, "the session stayed open with no instance behind it");
        }
        finally
        {
            await ExecuteAsync(admin, $"ALTER DATABASE {name} ALLOW_CONNECTIONS true");
        }
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>Holds a session with <c>curl -N</c> in a process of its own, as a provider would.</summary>
    private static Process StartCurlSession(RegistryNode node, string provider)
    {
        using var client = node.CreateClient();
        var start = new ProcessStartInfo("curl") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in new[] { "-N", "-sS", "-X", "POST", "-H", "Content-Type: application/json", "--data", provider, new Uri(client.BaseAddress!, "/v1/sessions").ToString() })
        {
            start.ArgumentList.Add(argument);
        }

        return Process.Start(start)!;
    }
}

/// <summary>Registry nodes of their own database, each listening on a real loopback socket.</summary>
internal sealed class KestrelNodes : IAsyncDisposable
{
    private readonly RegistryNode?[] _nodes;

    private KestrelNodes(RegistryNode?[] nodes, string connectionString)
    {
        _nodes = nodes;
        ConnectionString = connectionString;
    }

    /// <summary>The nodes' own database.</summary>
    public string ConnectionString { get; }

    public RegistryNode this[int index] => _nodes[index] ?? throw new InvalidOperationException($"Node {index} was stopped.");

    /// <summary>
    /// A client of one node that closes a connection whose response it stops reading at once
    /// (by default a disposed response is drained for up to two seconds, to reuse the connection).
    /// </summary>
    public HttpClient Client(int index)
    {
        using var factoryClient = this[index].CreateClient();
        return new HttpClient(new SocketsHttpHandler { MaxResponseDrainSize = 0 }) { BaseAddress = factoryClient.BaseAddress };
    }

    public static async Task<KestrelNodes> StartAsync(RegistryCluster cluster, int count, Dictionary<string, string?>? overrides = null)
    {
        var database = await cluster.CreateDatabaseAsync();
        var nodes = new RegistryNode?[count];
        for (var i = 0; i < count; i++)
        {
            var node = new RegistryNode(database, overrides);
            node.UseKestrel(0);
            node.StartServer();
            nodes[i] = node;
        }

        return new KestrelNodes(nodes, database);
    }

    /// <summary>Stops one node's host.</summary>
    public async Task StopAsync(int index)
    {
        if (_nodes[index] is { } node)
        {
            _nodes[index] = null;
            await node.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = 0; i < _nodes.Length; i++)
        {
            await StopAsync(i);
        }
    }
}
