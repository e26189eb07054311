using System.Text.Json.Nodes;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>Versions are content hashes: they move exactly when what the subscriber sees moves.</summary>
public sealed class VersionTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private static readonly string Subscription = Http.Subscription(Http.Entry("app", meta: """{"tier":"web"}"""));

    private async Task<string> VersionAsync(HttpClient? client = null, string? subscription = null)
    {
        var (_, version, _) = await (client ?? Client).SubscribeAsync(subscription ?? Subscription);
        return version!;
    }

    private async Task RegisterAsync(string application, string addr, string meta)
    {
        using var response = await Client.PostJsonAsync("/v1/register", Http.Provider(application, addr, meta));
        response.EnsureSuccessStatusCode();
    }

    [Fact]
    public async Task TheVersionIsStableWhileNothingChanges()
    {
        await RegisterAsync("app", "10.0.0.1:80", """{"tier":"web"}""");

        Assert.Equal(await VersionAsync(), await VersionAsync());
    }

    [Fact]
    public async Task UnrelatedApplicationsHeartbeatsAndIdenticalReRegistrationsLeaveItUnchanged()
    {
        await RegisterAsync("app", "10.0.0.1:80", """{"tier":"web"}""");
        var before = await VersionAsync();

        await RegisterAsync("other", "10.0.0.2:80", """{"tier":"web"}""");
        await RegisterAsync("app", "10.0.0.3:80", """{"tier":"db"}""");
        using (var heartbeat = await Client.PostJsonAsync("/v1/heartbeat", Http.Provider("app", "10.0.0.1:80")))
        {
            heartbeat.EnsureSuccessStatusCode();
        }

        await RegisterAsync("app", "10.0.0.1:80", """{"tier":"web"}""");

        Assert.Equal(before, await VersionAsync());
    }

    [Fact]
    public async Task AMetaChangeChangesItAndUndoingTheChangeBringsTheOldVersionBack()
    {
        await RegisterAsync("app", "10.0.0.1:80", """{"tier":"web","v":"1"}""");
        var original = await VersionAsync();

        await RegisterAsync("app", "10.0.0.1:80", """{"tier":"web","v":"2"}""");
        var changed = await VersionAsync();
        await RegisterAsync("app", "10.0.0.1:80", """{"tier":"web","v":"1"}""");

        Assert.NotEqual(original, changed);
        Assert.Equal(original, await VersionAsync());
    }

    [Fact]
    public async Task EqualContentHasEqualVersionsWhateverTheSubscriptionAndOnEveryNode()
    {
        await RegisterAsync("app", "10.0.0.1:80", """{"tier":"web"}""");
        using var nodeB = Cluster.NodeB.CreateClient();

        var viaMeta = await VersionAsync();
        var viaProtocol = await VersionAsync(subscription: Http.Subscription(Http.Entry("app", "http")));
        var viaPath = (await Client.GetAsync("/v1/services/app")).Headers.ETag!.Tag;
        // Node B reflects A's write within the notification delay: hold a poll there until it has.
        var onB = await VersionAsync(nodeB);
        if (onB != viaMeta)
        {
            (_, onB, _) = await nodeB.SubscribeAsync(Subscription, onB, wait: 5);
        }

        Assert.Equal(viaMeta, viaProtocol);
        Assert.Equal($"\"{viaMeta}\"", viaPath);
        Assert.Equal(viaMeta, onB);
    }

    [Fact]
    public async Task TheWritingNodeAndAnotherNodeServeTheSameAnswerForTheSameRows()
    {
        // The writing node keeps the meta it was sent; another node reads it back from jsonb
        // (keys reordered, escapes resolved): both must serve, and hash, the same answer.
        var subscription = Http.Subscription(Http.Entry("app"));
        using var nodeB = Cluster.NodeB.CreateClient();
        var (_, empty, _) = await nodeB.SubscribeAsync(subscription);
        await RegisterAsync("app", "10.0.0.1:80", """{"zone":"b","idc":"\u4e0a\u6d77","tier":"web","a":"x\"y"}""");

        var (_, onB, bodyB) = await nodeB.SubscribeAsync(subscription, empty, wait: 10);
        var (_, onA, bodyA) = await Client.SubscribeAsync(subscription);

        Assert.NotEqual(empty, onB);
        Assert.Equal(onA, onB);
        Assert.Equal(bodyA!.ToJsonString(), bodyB!.ToJsonString());
        Assert.Equal("上海", (string?)bodyA["endpoints"]![0]!["meta"]!["idc"]);
    }

    [Fact]
    public async Task ALargeApplicationChangedPieceByPieceIsServedAsTheDatabaseHoldsIt()
    {
        // Hundreds of instances span several of a snapshot's chunks; the changes land all over them.
        static string Addr(int i, int port) => $"10.2.{i / 250}.{i % 250 + 1}:{port}";
        await Task.WhenAll(Enumerable.Range(0, 300).Select(i => RegisterAsync("big", Addr(i, 80), "{}")));
        var subscription = Http.Subscription(Http.Entry("big"));
        using var nodeB = Cluster.NodeB.CreateClient();
        var (_, before, _) = await nodeB.SubscribeAsync(subscription);

        await Task.WhenAll(Enumerable.Range(0, 300).Select(async i =>
        {
            if (i % 7 == 0)
            {
                using var gone = await Client.PostJsonAsync("/v1/unregister", Http.Provider("big", Addr(i, 80)));
                gone.EnsureSuccessStatusCode();
            }
            else if (i % 5 == 0)
            {
                await RegisterAsync("big", Addr(i, 80), """{"v":"2"}""");
            }

            if (i % 4 == 1)
            {
                await RegisterAsync("big", Addr(i, 81), "{}"); // sorts right after its :80 neighbour
            }
        }));

        var expected = new List<string>();
        await using (var connection = await Cluster.OpenAsync())
        await using (var rows = new NpgsqlCommand("SELECT addr, coalesce(meta->>'v', '') FROM instances WHERE application = 'big' ORDER BY protocol, addr", connection))
        await using (var reader = await rows.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                expected.Add($"{reader.GetString(0)} {reader.GetString(1)}");
            }
        }

        var (_, onA, bodyA) = await Client.SubscribeAsync(subscription);
        // Node B catches up through the notifications: its answer moves until it has A's version.
        var (_, onB, bodyB) = await nodeB.SubscribeAsync(subscription, before, wait: 2);
        for (var polls = 1; onB != onA && polls < 5; polls++)
        {
            (_, onB, bodyB) = await nodeB.SubscribeAsync(subscription, onB, wait: 2);
        }

        static List<string> Served(JsonNode body) =>
            body["endpoints"]!.AsArray().Select(e => $"{(string?)e!["addr"]} {(string?)e["meta"]!["v"] ?? ""}").ToList();
        Assert.Equal(300 - 43 + 75, expected.Count);
        Assert.Equal(expected, Served(bodyA!));
        Assert.Equal(expected, Served(bodyB!));
    }

    [Fact]
    public async Task AnEmptyAnswerHasAVersionToo()
    {
        var (status, version, body) = await Client.SubscribeAsync(Subscription);

        Assert.Equal(200, status);
        Assert.False(string.IsNullOrEmpty(version));
        Assert.Empty(body!["endpoints"]!.AsArray());
    }
}
