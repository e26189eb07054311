using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Npgsql;
using Registry.Storage;
using Registry.Tests.Infrastructure;

namespace Registry.Tests.Drain;

/// <summary>
/// Confirmed drain on real nodes sharing one database: the unregistration answers once every
/// consumer that held the instance has been sent an answer without it, on every live node.
/// </summary>
public sealed class DrainTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private const string Leaving = "10.0.0.1:80";
    private static readonly string Everyone = Http.Subscription(Http.Entry("app"));
    private static readonly string ReadersOnly = Http.Subscription(Http.Entry("app", meta: """{"tag":"read"}"""));
    private static readonly string WritersOnly = Http.Subscription(Http.Entry("app", meta: """{"tag":"write"}"""));

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public async Task ADrainAnswersCompleteOnlyAfterEveryConsumerParkedOnAnyNodeHasItsAnswer(int nodeCount)
    {
        await using var third = nodeCount == 3 ? new RegistryNode(Cluster.ConnectionString) : null;
        var nodes = new[] { Cluster.NodeA, Cluster.NodeB, third }.OfType<RegistryNode>().ToArray();
        foreach (var node in nodes)
        {
            _ = node.Server;
        }

        await RegisterAsync(Leaving, """{"tag":"read"}""");
        await RegisterAsync("10.0.0.2:80", """{"tag":"write"}""");
        await DrainNodes.WaitUntilMarkedAsync(Cluster, nodes.Length);

        // On each node: three consumers of everything and two of the readers (all hold the
        // leaving instance), and one of the writers, which never held it.
        var polls = new List<Task<(long ReceivedAt, JsonNode Answer)>>();
        var bystanders = new List<Task<(long ReceivedAt, JsonNode Answer)>>();
        var parkedWatches = new List<MeterWatch>();
        foreach (var node in nodes)
        {
            var client = node.CreateClient();
            var parked = ParkedPolls.On(node);
            parkedWatches.Add(parked);
            var everyone = await VersionOfAsync(client, Everyone, 2);
            var readers = await VersionOfAsync(client, ReadersOnly, 1);
            var writers = await VersionOfAsync(client, WritersOnly, 1);
            polls.AddRange(Enumerable.Range(0, 3).Select(_ => DrainNodes.PollAsync(client, Everyone, everyone)));
            polls.AddRange(Enumerable.Range(0, 2).Select(_ => DrainNodes.PollAsync(client, ReadersOnly, readers)));
            bystanders.Add(DrainNodes.PollAsync(client, WritersOnly, writers));
            await parked.WaitForAsync(6);
        }

        var clock = Stopwatch.StartNew();
        using var response = await Client.PostJsonAsync("/v1/unregister?drain=20", Http.Provider("app", Leaving));
        var drain = await response.ReadJsonAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True((bool)drain["complete"]!, drain.ToJsonString());
        Assert.Equal(5 * nodes.Length, (int)drain["delivered"]!);
        Assert.Equal(0, (int)drain["pending"]!);
        Assert.Equal(nodes.Length, (int)drain["nodes"]!);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
        foreach (var poll in polls)
        {
            // Every consumer's answer, without the instance, had been sent when the drain answered:
            // it is there to be read at once (the test client's own reading may lag the server's send).
            var (_, answer) = await poll.WaitAsync(TimeSpan.FromSeconds(2));
            Assert.DoesNotContain(answer["endpoints"]!.AsArray(), e => (string?)e!["addr"] == Leaving);
        }

        // The writers' consumers never held it: still parked, and not counted.
        Assert.All(bystanders, b => Assert.False(b.IsCompleted));
        foreach (var parked in parkedWatches)
        {
            Assert.Equal(1, parked.Total);
            parked.Dispose();
        }
    }

    [Fact]
    public async Task ADrainWithoutWatchersAnswersAtOnce()
    {
        _ = Cluster.NodeB.Server;
        await RegisterAsync(Leaving, "{}");
        await DrainNodes.WaitUntilMarkedAsync(Cluster, 2);
        var clock = Stopwatch.StartNew();

        using var response = await Client.PostJsonAsync("/v1/unregister?drain=30", Http.Provider("app", Leaving));
        var drain = await response.ReadJsonAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("""{"delivered":0,"pending":0,"nodes":2,"complete":true}""", drain.ToJsonString());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"took {clock.Elapsed}");
        var (_, _, body) = await Client.SubscribeAsync(Everyone);
        Assert.Empty(body!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task AConsumerThatNeverReadsItsAnswerKeepsTheDrainPendingUntilItRunsOut()
    {
        await using var node = new RegistryNode(Cluster.ConnectionString);
        node.UseKestrel(0);
        node.StartServer();
        using var client = node.CreateClient();
        // Through node A first: the node has applied it before its own writes are answered.
        await RegisterAsync(Leaving, "{}");
        await DrainNodes.RegisterBigAsync(client, "big", 300);
        var stalledSubscription = Http.Subscription(Http.Entry("app"), Http.Entry("big"));
        var version = await DrainNodes.VersionAsync(client, stalledSubscription);
        using var parked = ParkedPolls.On(node);
        using var stalled = await DrainNodes.StalledPollAsync(client.BaseAddress!, stalledSubscription, version);
        var reader = DrainNodes.PollAsync(client, Everyone, await VersionOfAsync(client, Everyone));
        await parked.WaitForAsync(2);
        await DrainNodes.WaitUntilMarkedAsync(Cluster, 2);
        var clock = Stopwatch.StartNew();

        using var response = await Client.PostJsonAsync("/v1/unregister?drain=2", Http.Provider("app", Leaving));
        var drain = await response.ReadJsonAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False((bool)drain["complete"]!, drain.ToJsonString());
        Assert.Equal(1, (int)drain["pending"]!);
        Assert.Equal(1, (int)drain["delivered"]!);
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(2), $"answered after {clock.Elapsed}");
        Assert.True(reader.IsCompleted);
    }

    [Fact]
    public async Task ANodeKilledDuringTheDrainIsNoLongerWaitedFor()
    {
        _ = Cluster.NodeB.Server;
        await using var doomed = await NodeProcess.StartAsync(Cluster.ConnectionString);
        using var doomedClient = new HttpClient { BaseAddress = doomed.Address };
        // Through node A first: the doomed node has applied it before its own writes are answered.
        await RegisterAsync(Leaving, "{}");
        await DrainNodes.RegisterBigAsync(doomedClient, "big", 300);
        var stalledSubscription = Http.Subscription(Http.Entry("app"), Http.Entry("big"));
        var version = await DrainNodes.VersionAsync(doomedClient, stalledSubscription);
        using var stalled = await DrainNodes.StalledPollAsync(doomed.Address, stalledSubscription, version);
        await WaitForWatchersAsync(doomedClient, 1);
        await DrainNodes.WaitUntilMarkedAsync(Cluster, 3);
        using var parked = ParkedPolls.On(Node);
        var reader = DrainNodes.PollAsync(Client, Everyone, await VersionOfAsync(Client, Everyone));
        await parked.WaitForAsync(1);
        var clock = Stopwatch.StartNew();

        var drain = Client.PostJsonAsync("/v1/unregister?drain=30", Http.Provider("app", Leaving));
        await reader; // the removal has reached the consumers of node A
        Assert.False(drain.IsCompleted, "the drain did not wait for the stalled consumer on the other node");
        await doomed.KillAsync();
        using var response = await drain;
        var body = await response.ReadJsonAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True((bool)body["complete"]!, body.ToJsonString());
        Assert.Equal(2, (int)body["nodes"]!);
        Assert.Equal(1, (int)body["delivered"]!);
        Assert.Equal(0, (int)body["pending"]!);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task ALiveNodeThatNeverReportsKeepsTheDrainIncompleteEvenWhenReadingTheNodesOutlastsTheRefreshInterval()
    {
        // Found by the benchmark under load: a read of the nodes slower than the refresh interval
        // left a negative wait, and the drain answered 500.
        await using var node = new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:Drain:NodesRefreshInterval"] = "00:00:00.001",
        });
        using var client = node.CreateClient();
        await RegisterAsync(Leaving, "{}");
        using var parked = ParkedPolls.On(node);
        var poll = DrainNodes.PollAsync(client, Everyone, await VersionOfAsync(client, Everyone));
        await parked.WaitForAsync(1);
        await DrainNodes.WaitUntilMarkedAsync(Cluster, 2);
        await using (var connection = await Cluster.OpenAsync())
        await using (var ghost = new Npgsql.NpgsqlCommand(
            "INSERT INTO nodes (id, started_at, last_seen_at) VALUES ('ghost', now() - interval '1 minute', now() + interval '1 minute')", connection))
        {
            await ghost.ExecuteNonQueryAsync();
        }

        using var response = await client.PostJsonAsync("/v1/unregister?drain=1", Http.Provider("app", Leaving));
        var drain = await response.ReadJsonAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.False((bool)drain["complete"]!, drain.ToJsonString());
        Assert.Equal(1, (int)drain["delivered"]!);
        Assert.Equal(0, (int)drain["pending"]!);
        Assert.True(poll.IsCompleted);
    }

    [Fact]
    public async Task WatchersCountTheParkedConsumersPerNodeAndVersion()
    {
        await RegisterAsync(Leaving, """{"tag":"read"}""");
        using var nodeB = Cluster.NodeB.CreateClient();
        await DrainNodes.WaitUntilMarkedAsync(Cluster, 2);
        using var parkedA = ParkedPolls.On(Node);
        using var parkedB = ParkedPolls.On(Cluster.NodeB);
        var everyone = await VersionOfAsync(Client, Everyone);
        var writers = await VersionOfAsync(Client, WritersOnly, 0);
        Assert.Equal(everyone, await VersionOfAsync(nodeB, Everyone));
        var polls = new[]
        {
            DrainNodes.PollAsync(Client, Everyone, everyone),
            DrainNodes.PollAsync(Client, Everyone, everyone),
            DrainNodes.PollAsync(Client, WritersOnly, writers),
            DrainNodes.PollAsync(nodeB, Everyone, everyone),
        };
        await parkedA.WaitForAsync(3);
        await parkedB.WaitForAsync(1);

        using var response = await Client.GetAsync(new Uri("/v1/services/app/watchers", UriKind.Relative));
        var body = await response.ReadJsonAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var expected = new JsonObject
        {
            ["application"] = "app",
            ["nodes"] = new JsonArray(new[]
            {
                (Id: DrainNodes.IdOf(Node), Parked: 3, Versions: new JsonObject { [everyone] = 2, [writers] = 1 }),
                (Id: DrainNodes.IdOf(Cluster.NodeB), Parked: 1, Versions: new JsonObject { [everyone] = 1 }),
            }.OrderBy(n => n.Id, StringComparer.Ordinal).Select(n => (JsonNode)new JsonObject
            {
                ["node"] = n.Id,
                ["parked"] = n.Parked,
                ["versions"] = n.Versions,
            }).ToArray()),
        };
        Assert.True(JsonNode.DeepEquals(expected, body), body.ToJsonString());
        Assert.All(polls, p => Assert.False(p.IsCompleted));
    }

    /// <summary>
    /// A question goes to every node, each answer only to the asker: on the shared channel, which every node reads on
    /// its change feed, only questions pass (before, every answer did: a question to N nodes cost N² deliveries).
    /// </summary>
    [Fact]
    public async Task AnswersGoToTheAskingNodeAloneNotToEveryNode()
    {
        await RegisterAsync(Leaving, "{}");
        using var nodeB = Cluster.NodeB.CreateClient();
        await DrainNodes.WaitUntilMarkedAsync(Cluster, 2);
        await using var shared = await NotificationListener.StartAsync(Cluster.ConnectionString, "registry_drain");
        using var parked = ParkedPolls.On(Cluster.NodeB);
        var version = await VersionOfAsync(nodeB, Everyone);
        var poll = DrainNodes.PollAsync(nodeB, Everyone, version);
        await parked.WaitForAsync(1);

        using var watchers = await Client.GetAsync(new Uri("/v1/services/app/watchers", UriKind.Relative));
        var watched = await watchers.ReadJsonAsync();
        using var drained = await Client.PostJsonAsync("/v1/unregister?drain=10", Http.Provider("app", Leaving));
        var drain = await drained.ReadJsonAsync();
        await poll;

        Assert.Equal(2, watched["nodes"]!.AsArray().Count);
        Assert.Equal("""{"delivered":1,"pending":0,"nodes":2,"complete":true}""", drain.ToJsonString());
        await shared.WaitForAsync("ask");
        Assert.Equal(1, shared.Count("watch"));
        Assert.Equal(0, shared.Count("watchers") + shared.Count("report"));
    }

    [Theory]
    [InlineData("0", "must be at least 1")]
    [InlineData("61", "must be at most 60 seconds")]
    [InlineData("soon", "must be a positive whole number of seconds")]
    public async Task ADrainOutsideOneToSixtySecondsIsRefusedNamingDrain(string drain, string reason)
    {
        await RegisterAsync(Leaving, "{}");

        using var response = await Client.PostJsonAsync($"/v1/unregister?drain={drain}", Http.Provider("app", Leaving));
        var problem = await response.ReadJsonAsync();

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(reason, (string?)problem["errors"]!["drain"]![0]);
        var (_, _, body) = await Client.SubscribeAsync(Everyone);
        Assert.Single(body!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task DrainingAnInstanceThatIsNotRegisteredIsNotFound()
    {
        using var response = await Client.PostJsonAsync("/v1/unregister?drain=5", Http.Provider("app", Leaving));

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    [Fact]
    public async Task WatchersOfABadApplicationNameAreRefused()
    {
        using var response = await Client.GetAsync(new Uri("/v1/services/-bad/watchers", UriKind.Relative));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.NotNull((await response.ReadJsonAsync())["errors"]!["application"]);
    }

    /// <summary>
    /// The nodes' answers, a node's own among them, come back only through its change feed: a node whose feed is down
    /// refuses both questions with 503 and removes nothing. Before, the watchers were 200 with no node at all ("nobody
    /// watches"), and a drain removed the instance and waited out its whole time for reports that could not arrive.
    /// </summary>
    [Fact]
    public async Task ANodeWhoseChangeFeedIsDownRefusesDrainsAndWatchersWith503()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database);
        using var client = node.CreateClient();
        using (var registered = await client.PostJsonAsync("/v1/register", Http.Provider("app", Leaving)))
        {
            registered.EnsureSuccessStatusCode();
        }

        // The feed is cut, and its reconnection waits at the full load it must finish before it listens again.
        await using var held = await HeldFeed.CutAsync(database);
        using var watchers = await client.GetAsync(new Uri("/v1/services/app/watchers", UriKind.Relative));
        using var drain = await client.PostJsonAsync("/v1/unregister?drain=5", Http.Provider("app", Leaving));
        await held.ReleaseAsync();

        foreach (var refused in new[] { watchers, drain })
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
            Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
            Assert.NotNull(refused.Headers.RetryAfter);
        }

        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand("SELECT count(*) FROM instances", connection);
        Assert.Equal(1L, await count.ExecuteScalarAsync());
    }

    private async Task RegisterAsync(string addr, string meta)
    {
        using var response = await Client.PostJsonAsync("/v1/register", Http.Provider("app", addr, meta));
        response.EnsureSuccessStatusCode();
    }

    /// <summary>The version of the answer once the node's answer has that many endpoints (its feed may lag the write by milliseconds).</summary>
    private static async Task<string> VersionOfAsync(HttpClient client, string subscription, int endpoints = 1)
    {
        var (_, version, body) = await client.SubscribeAsync(subscription);
        while (body!["endpoints"]!.AsArray().Count != endpoints)
        {
            (_, version, body) = await client.SubscribeAsync(subscription, version, wait: 5);
        }

        return version!;
    }

    /// <summary>Waits until the node counts this many consumers parked on <c>app</c> (the stalled one has no meter to watch from here).</summary>
    private static async Task WaitForWatchersAsync(HttpClient client, int parked)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using var response = await client.GetAsync(new Uri("/v1/services/app/watchers", UriKind.Relative));
            var body = await response.ReadJsonAsync();
            if (body["nodes"]!.AsArray().Sum(n => (int)n!["parked"]!) >= parked)
            {
                return;
            }

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), body.ToJsonString());
            await Task.Delay(50);
        }
    }
}
