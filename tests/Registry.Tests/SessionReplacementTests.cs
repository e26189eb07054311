using System.Net;
using System.Text.Json.Nodes;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// A session whose registration is taken over — by another session or by a plain register, with
/// the same meta or not — is told so (<c>ended: replaced</c>), and its connection closing
/// afterwards leaves the new holder's registration alone.
/// </summary>
public sealed class SessionReplacementTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private static readonly string Provider = Http.Provider("app", "10.0.0.1:80", """{"zone":"a"}""");
    private static readonly string Subscription = Http.Subscription(Http.Entry("app"));

    /// <summary>Long enough for any notification on a loopback cluster; a stream that says nothing meanwhile never will.</summary>
    private static readonly TimeSpan EventWait = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task ASecondSessionWithTheSameMetaOnAnotherNodeEndsTheFirstWithReplacedAndTheFirstsCloseLeavesIt()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 2);
        using var ended = MeterWatch.Node(nodes[0], "registry.sessions.ended");
        using var onA = nodes.Client(0);
        using var onB = nodes.Client(1);
        var first = await SessionReader.StartAsync(onA, Provider);
        Assert.Equal("lease", (await first.ReadAsync())?.Name);

        await using var second = await SessionReader.StartAsync(onB, Provider);
        Assert.Equal("lease", (await second.ReadAsync())?.Name);

        Assert.Equal("replaced", await EndReasonAsync(first));
        await first.DisposeAsync();
        // Recorded once the first session's end is settled (any removal it made acknowledged).
        await ended.WaitForAsync(1);

        await AssertStillRegisteredAsync(second, nodes.ConnectionString);
        var (_, _, answer) = await onB.SubscribeAsync(Subscription);
        Assert.Single(answer!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task ClosingASessionJustReplacedBySameMetaSessionOnTheSameNodeLeavesTheNewOne()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 1);
        using var ended = MeterWatch.Node(nodes[0], "registry.sessions.ended");
        using var firstClient = nodes.Client(0);
        using var secondClient = nodes.Client(0);
        var first = await SessionReader.StartAsync(firstClient, Provider);
        Assert.Equal("lease", (await first.ReadAsync())?.Name);
        await using var second = await SessionReader.StartAsync(secondClient, Provider);
        Assert.Equal("lease", (await second.ReadAsync())?.Name);

        // Aborted without reading on: whatever the first session had noticed, its end must not remove the second's instance.
        await first.DisposeAsync();
        await ended.WaitForAsync(1);

        await AssertStillRegisteredAsync(second, nodes.ConnectionString);
        using var client = nodes[0].CreateClient();
        var (_, _, answer) = await client.SubscribeAsync(Subscription);
        Assert.Single(answer!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task APlainRegisterWithTheSameMetaReplacesASessionWhichThenLeavesTheRegistrationToItsHeartbeats()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 1);
        using var ended = MeterWatch.Node(nodes[0], "registry.sessions.ended", "reason", "replaced");
        using var sessionClient = nodes.Client(0);
        using var client = nodes[0].CreateClient();
        var session = await SessionReader.StartAsync(sessionClient, Provider, ttl: 30);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);

        // The same meta and TTL: the row as consumers and leases see it does not change.
        using (var register = await client.PostJsonAsync("/v1/register?ttl=30", Provider))
        {
            Assert.Equal(HttpStatusCode.OK, register.StatusCode);
        }

        Assert.Equal("replaced", await EndReasonAsync(session));
        await session.DisposeAsync();
        await ended.WaitForAsync(1);

        using (var heartbeat = await client.PostJsonAsync("/v1/heartbeat", Provider))
        {
            Assert.Equal(HttpStatusCode.OK, heartbeat.StatusCode);
        }

        var (_, _, answer) = await client.SubscribeAsync(Subscription);
        Assert.Equal("a", (string?)Assert.Single(answer!["endpoints"]!.AsArray())!["meta"]!["zone"]);
    }

    [Fact]
    public async Task ReopeningASessionWithTheSameMetaDoesNotAnswerParkedConsumersOnAnyNode()
    {
        await using var nodes = await KestrelNodes.StartAsync(Cluster, 2);
        using var onA = nodes[0].CreateClient();
        using var onB = nodes[1].CreateClient();
        using var firstClient = nodes.Client(0);
        using var secondClient = nodes.Client(1);
        await using var first = await SessionReader.StartAsync(firstClient, Provider);
        Assert.Equal("lease", (await first.ReadAsync())?.Name);
        var (_, version, _) = await onA.SubscribeAsync(Subscription);
        // Node B has loaded the session's registration once it answers what node A answers.
        var (_, onBVersion, _) = await onB.SubscribeAsync(Subscription);
        while (onBVersion != version)
        {
            (_, onBVersion, _) = await onB.SubscribeAsync(Subscription, onBVersion, wait: 10).WaitAsync(TimeSpan.FromSeconds(15));
        }

        using var parkedA = ParkedPolls.On(nodes[0]);
        using var parkedB = ParkedPolls.On(nodes[1]);
        var pollA = onA.SubscribeAsync(Subscription, version, wait: 30);
        var pollB = onB.SubscribeAsync(Subscription, version, wait: 30);
        await parkedA.WaitForAsync(1);
        await parkedB.WaitForAsync(1);

        // Acknowledged (so reflected on node B) before its lease is streamed.
        await using var second = await SessionReader.StartAsync(secondClient, Provider);
        Assert.Equal("lease", (await second.ReadAsync())?.Name);
        Assert.Equal("replaced", await EndReasonAsync(first));
        // A change consumers do see, after the re-open: the polls must be answered by this one.
        using (var register = await onB.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.2:80")))
        {
            Assert.Equal(HttpStatusCode.Created, register.StatusCode);
        }

        foreach (var poll in new[] { pollA, pollB })
        {
            var (_, after, answer) = await poll.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.NotEqual(version, after);
            Assert.Equal(["10.0.0.1:80", "10.0.0.2:80"], answer!["endpoints"]!.AsArray().Select(e => (string?)e!["addr"]));
        }
    }

    /// <summary>
    /// The old session's removal and the new session's registration queued behind a stalled
    /// batch, in either order: each takes effect as it would have alone, so the new session's
    /// registration survives.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task TheOldSessionsRemovalQueuedWithTheNewSessionsRegistrationLeavesTheNewOne(bool newRegistrationFirst)
    {
        using var ended = MeterWatch.Node(Node, "registry.sessions.ended");
        using var firstClient = Node.CreateClient();
        using var secondClient = Node.CreateClient();
        var first = await SessionReader.StartAsync(firstClient, Provider);
        Assert.Equal("lease", (await first.ReadAsync())?.Name);

        Task<SessionReader> opening;
        await using (var stall = await StalledWriter.StartAsync(Cluster, Node, Client))
        {
            if (newRegistrationFirst)
            {
                opening = SessionReader.StartAsync(secondClient, Provider);
                await stall.Queued.WaitForAsync(1);
                await first.DisposeAsync();
            }
            else
            {
                await first.DisposeAsync();
                await stall.Queued.WaitForAsync(1);
                opening = SessionReader.StartAsync(secondClient, Provider);
            }

            await stall.Queued.WaitForAsync(2);
            await stall.ReleaseAsync();
        }

        await using var second = await opening.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("lease", (await second.ReadAsync())?.Name);
        await ended.WaitForAsync(1);

        await AssertStillRegisteredAsync(second, Cluster.ConnectionString);
        var (_, _, answer) = await Client.SubscribeAsync(Subscription);
        Assert.Single(answer!["endpoints"]!.AsArray());
    }

    /// <summary>
    /// A plain registration queued right behind a new session of the same instance (so both
    /// would fit one batch): the session is told it was replaced, and its close leaves the
    /// registration, as it would had the two come apart.
    /// </summary>
    [Fact]
    public async Task ARegistrationQueuedRightBehindASessionReplacesItAndTheSessionsCloseLeavesIt()
    {
        using var ended = MeterWatch.Node(Node, "registry.sessions.ended");
        using var sessionClient = Node.CreateClient();
        Task<SessionReader> opening;
        Task<HttpResponseMessage> registering;
        await using (var stall = await StalledWriter.StartAsync(Cluster, Node, Client))
        {
            opening = SessionReader.StartAsync(sessionClient, Provider);
            await stall.Queued.WaitForAsync(1);
            registering = Client.PostJsonAsync("/v1/register", Provider);
            await stall.Queued.WaitForAsync(2);
            await stall.ReleaseAsync();
        }

        using (var registered = await registering.WaitAsync(TimeSpan.FromSeconds(10)))
        {
            Assert.Equal(HttpStatusCode.OK, registered.StatusCode);
        }

        var session = await opening.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("lease", (await session.ReadAsync())?.Name);
        Assert.Equal("replaced", await EndReasonAsync(session));
        await session.DisposeAsync();
        await ended.WaitForAsync(1);

        await using var connection = await Cluster.OpenAsync();
        await using var query = new NpgsqlCommand("SELECT count(*)::int FROM instances WHERE application = 'app' AND addr = '10.0.0.1:80'", connection);
        Assert.Equal(1, await query.ExecuteScalarAsync());
    }

    /// <summary>The reason of the <c>ended</c> event the stream closes with; fails when none comes in time.</summary>
    private static async Task<string?> EndReasonAsync(SessionReader session)
    {
        var ended = await session.ReadEventAsync().WaitAsync(EventWait);
        Assert.Equal("ended", ended?.Name);
        Assert.Null(await session.ReadAsync());
        return (string?)JsonNode.Parse(ended!.Value.Data)!["reason"];
    }

    /// <summary>The instance's row is in the database and the holding session goes on (a keep-alive, not an end).</summary>
    private static async Task AssertStillRegisteredAsync(SessionReader holder, string connectionString)
    {
        Assert.Equal((":", "keep-alive"), await holder.ReadAsync());
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var query = new NpgsqlCommand("SELECT count(*)::int FROM instances WHERE application = 'app' AND addr = '10.0.0.1:80'", connection);
        Assert.Equal(1, await query.ExecuteScalarAsync());
    }
}
