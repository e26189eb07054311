using System.Diagnostics;
using Npgsql;
using Registry.Storage;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>Several nodes on one database, expiry, and the change feed healing itself.</summary>
public sealed class ClusterTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private static readonly string Subscription = Http.Subscription(Http.Entry("app"));

    [Fact]
    public async Task ARegistrationOnNodeAWakesAConsumerParkedOnNodeB()
    {
        using var nodeB = Cluster.NodeB.CreateClient();
        var (_, version, _) = await nodeB.SubscribeAsync(Subscription);
        using var parked = ParkedPolls.On(Cluster.NodeB);

        var poll = nodeB.SubscribeAsync(Subscription, version, wait: 30);
        await parked.WaitForAsync(1);
        var clock = Stopwatch.StartNew();
        using (var response = await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80")))
        {
            response.EnsureSuccessStatusCode();
        }

        var (_, after, body) = await poll.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.NotEqual(version, after);
        Assert.Equal("10.0.0.1:80", (string?)Assert.Single(body!["endpoints"]!.AsArray())!["addr"]);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"took {clock.Elapsed}");
    }

    [Fact]
    public async Task AnExpiredLeaseDisappearsAndWakesItsConsumers()
    {
        using (var response = await Client.PostJsonAsync("/v1/register?ttl=1", Http.Provider("app", "10.0.0.1:80")))
        {
            response.EnsureSuccessStatusCode();
        }

        var (_, version, body) = await Client.SubscribeAsync(Subscription);
        Assert.Single(body!["endpoints"]!.AsArray());
        var clock = Stopwatch.StartNew();

        var (_, after, expired) = await Client.SubscribeAsync(Subscription, version, wait: 30).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.NotEqual(version, after);
        Assert.Empty(expired!["endpoints"]!.AsArray());
        // TTL 1 s plus one 200 ms sweep interval, with room for a busy machine.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(4), $"took {clock.Elapsed}");
        using var heartbeat = await Client.PostJsonAsync("/v1/heartbeat", Http.Provider("app", "10.0.0.1:80"));
        Assert.Equal(System.Net.HttpStatusCode.NotFound, heartbeat.StatusCode);
    }

    [Fact]
    public async Task TheChangeFeedRecoversAfterItsConnectionIsKilled()
    {
        using var nodeB = Cluster.NodeB.CreateClient();
        var (_, version, _) = await Client.SubscribeAsync(Subscription);

        await using (var connection = await Cluster.OpenAsync())
        await using (var kill = new NpgsqlCommand("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = @name AND datname = current_database()", connection))
        {
            kill.Parameters.AddWithValue("name", RegistryDatabase.ChangeFeedApplicationName);
            Assert.True((long)(await kill.ExecuteScalarAsync())! >= 1);
        }

        // Written through node B while node A's feed is down or reconnecting: A must catch up
        // by reloading after it LISTENs again.
        using (var response = await nodeB.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80")))
        {
            response.EnsureSuccessStatusCode();
        }

        var (_, afterFirst, _) = await Client.SubscribeAsync(Subscription, version, wait: 30).WaitAsync(TimeSpan.FromSeconds(15));
        Assert.NotEqual(version, afterFirst);

        // And notifications flow again afterwards.
        using var parked = ParkedPolls.On(Node);
        var poll = Client.SubscribeAsync(Subscription, afterFirst, wait: 30);
        await parked.WaitForAsync(1);
        using (var response = await nodeB.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.2:80")))
        {
            response.EnsureSuccessStatusCode();
        }

        var (_, afterSecond, body) = await poll.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.NotEqual(afterFirst, afterSecond);
        Assert.Equal(2, body!["endpoints"]!.AsArray().Count);
        using var ready = await Client.GetAsync("/readyz");
        Assert.Equal(System.Net.HttpStatusCode.OK, ready.StatusCode);
    }

    [Fact]
    public async Task MetaChangesAndUnregistrationsOnNodeAReachNodeB()
    {
        using var nodeB = Cluster.NodeB.CreateClient();
        using (var response = await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80", """{"v":"1"}""")))
        {
            response.EnsureSuccessStatusCode();
        }

        var (_, version, body) = await nodeB.SubscribeAsync(Subscription);
        if (body!["endpoints"]!.AsArray().Count == 0)
        {
            (_, version, _) = await nodeB.SubscribeAsync(Subscription, version, wait: 10); // the notification's reload
        }

        using (var response = await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80", """{"v":"2"}""")))
        {
            Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        }

        var (_, afterMeta, changed) = await nodeB.SubscribeAsync(Subscription, version, wait: 10);
        Assert.NotEqual(version, afterMeta);
        Assert.Equal("2", (string?)Assert.Single(changed!["endpoints"]!.AsArray())!["meta"]!["v"]);

        using (var response = await Client.PostJsonAsync("/v1/unregister", Http.Provider("app", "10.0.0.1:80")))
        {
            Assert.Equal(System.Net.HttpStatusCode.NoContent, response.StatusCode);
        }

        var (_, afterRemoval, empty) = await nodeB.SubscribeAsync(Subscription, afterMeta, wait: 10);
        Assert.NotEqual(afterMeta, afterRemoval);
        Assert.Empty(empty!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task ConcurrentMixedWritesLeaveEveryNodeEqualToTheDatabase()
    {
        using var nodeB = Cluster.NodeB.CreateClient();
        var random = new Random(20261125);
        var operations = Enumerable.Range(0, 300).Select(_ =>
        {
            var addr = $"10.0.{random.Next(3)}.{random.Next(1, 12)}:80";
            return random.Next(3) == 0
                ? ("/v1/unregister", Http.Provider("mixed", addr))
                : ("/v1/register", Http.Provider("mixed", addr, $$"""{"v":"{{random.Next(4)}}"}"""));
        }).ToArray();

        // Sent together so that batches mix inserts, replacements and deletions of the same rows.
        await Task.WhenAll(operations.Select(async (operation, i) =>
        {
            using var response = await (i % 2 == 0 ? Client : nodeB).PostJsonAsync(operation.Item1, operation.Item2);
            Assert.True((int)response.StatusCode is 200 or 201 or 204 or 404, $"{operation.Item1}: {response.StatusCode}");
        }));

        string[] truth;
        await using (var connection = await Cluster.OpenAsync())
        await using (var select = new NpgsqlCommand("SELECT addr || '=' || (meta->>'v') FROM instances WHERE application = 'mixed' ORDER BY addr COLLATE \"C\"", connection))
        await using (var reader = await select.ExecuteReaderAsync())
        {
            var rows = new List<string>();
            while (await reader.ReadAsync())
            {
                rows.Add(reader.GetString(0));
            }

            truth = rows.ToArray();
        }

        var subscription = Http.Subscription(Http.Entry("mixed"));
        foreach (var client in new[] { Client, nodeB })
        {
            var (_, version, body) = await client.SubscribeAsync(subscription);
            var clock = Stopwatch.StartNew();
            while (!Seen(body!).SequenceEqual(truth) && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                (_, version, body) = await client.SubscribeAsync(subscription, version, wait: 5); // the other node's notifications
            }

            Assert.Equal(truth, Seen(body!));
        }

        static string[] Seen(System.Text.Json.Nodes.JsonNode answer) => answer["endpoints"]!.AsArray()
            .Select(e => $"{(string?)e!["addr"]}={(string?)e["meta"]!["v"]}").ToArray();
    }

    [Fact]
    public async Task ANodeReflectsItsOwnWritesAtOnce()
    {
        using var nodeB = Cluster.NodeB.CreateClient();
        for (var i = 0; i < 5; i++)
        {
            using var response = await nodeB.PostJsonAsync("/v1/register", Http.Provider("app", $"10.0.0.{i + 1}:80"));
            response.EnsureSuccessStatusCode();
            var (_, _, body) = await nodeB.SubscribeAsync(Subscription);
            Assert.Equal(i + 1, body!["endpoints"]!.AsArray().Count);
        }
    }
}
