using System.Diagnostics;
using System.Net;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// Group commit: writes that queue together commit as one batch. The writes sent while the
/// writer is stalled queue up behind it in a known order and are taken as the next batch.
/// </summary>
public sealed class WriteBatchTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    /// <summary>
    /// Writes queued together commit together, except that a batch writes each instance once: a
    /// second write to one is set aside for the next batch, so each is answered with its own status and
    /// its own lease, in arrival order.
    /// </summary>
    [Fact]
    public async Task WritesQueuedTogetherCommitInArrivalOrderEachWithItsOwnStatusAndLease()
    {
        await using var notifications = await NotificationListener.StartAsync(Cluster.ConnectionString);
        var y = Http.Provider("batch", "10.0.0.2:80");
        var writes = new (string Path, string Body, HttpStatusCode Alone)[]
        {
            ("/v1/unregister", y, HttpStatusCode.NotFound),
            ("/v1/register", y, HttpStatusCode.Created),
            ("/v1/register", y, HttpStatusCode.OK), // identical: a renewal
            ("/v1/unregister", y, HttpStatusCode.NoContent),
            ("/v1/register", Http.Provider("batch", "10.0.0.2:80", """{"v":"2"}"""), HttpStatusCode.Created),
            ("/v1/register", Http.Provider("batch-2", "10.0.0.3:80"), HttpStatusCode.Created),
        };

        var (answers, batches, bodies) = await QueueBehindAStalledBatchAsync(writes.Select(w => (w.Path, w.Body)).ToArray());

        Assert.Equal(writes.Select(w => w.Alone), answers);
        // The stalled one, then one per write to the same instance, the first with batch-2's too.
        Assert.Equal(6, batches);
        foreach (var body in bodies.Where((_, i) => answers[i] is HttpStatusCode.OK or HttpStatusCode.Created))
        {
            var expires = DateTimeOffset.Parse((string)System.Text.Json.Nodes.JsonNode.Parse(body)!["expires"]!, System.Globalization.CultureInfo.InvariantCulture);
            Assert.True(expires > DateTimeOffset.UtcNow, body);
        }

        var endpoints = await EndpointsOnNodeBAsync(Http.Subscription(Http.Entry("batch"), Http.Entry("batch-2")), 2);
        Assert.Equal(["10.0.0.2:80", "10.0.0.3:80"], endpoints.Select(e => (string?)e!["addr"]));
        Assert.Equal("2", (string?)endpoints[0]!["meta"]!["v"]);

        // One notification per batch that changed the application (the registration, the removal,
        // the new meta; not the identical re-registration), naming the changed instance.
        await notifications.WaitForAsync("batch-2");
        await notifications.WaitUntilAsync("batch", count => count >= 3);
        Assert.Equal(Enumerable.Repeat("batch\nhttp 10.0.0.2:80", 3), notifications.Payloads("batch"));
        Assert.Equal(["batch-2\nhttp 10.0.0.3:80"], notifications.Payloads("batch-2"));
    }

    /// <summary>
    /// One client writing one instance over and over (a batch each, since a batch writes an instance once) holds no
    /// other instance's write behind its own: that one is taken with the first of them. Before, the second write to
    /// the instance ended the batch, and the other write waited for every one of them, a commit each.
    /// </summary>
    [Fact]
    public async Task WritesToOneInstanceOverAndOverHoldNoOtherInstancesWriteBehindThem()
    {
        await using var notifications = await NotificationListener.StartAsync(Cluster.ConnectionString);
        var writes = Enumerable.Range(0, 8)
            .Select(i => ("/v1/register", Http.Provider("busy", "10.0.0.2:80", $$"""{"v":"{{i}}"}""")))
            .Append(("/v1/register", Http.Provider("other", "10.0.0.3:80")))
            .ToArray();

        var (answers, batches, _) = await QueueBehindAStalledBatchAsync(writes);

        Assert.All(answers, status => Assert.True(status is HttpStatusCode.OK or HttpStatusCode.Created, $"{status}"));
        Assert.Equal(9, batches); // the stalled one, then one per write to busy
        await notifications.WaitUntilAsync("busy", count => count >= 8);
        await notifications.WaitForAsync("other");
        var order = notifications.Applications().Where(application => application is "busy" or "other").ToList();
        Assert.InRange(order.IndexOf("other"), 0, 1);
    }

    [Fact]
    public async Task ABatchTooLargeToListInANotificationAnnouncesTheWholeApplication()
    {
        await using var notifications = await NotificationListener.StartAsync(Cluster.ConnectionString);
        var writes = Enumerable.Range(0, 400)
            .Select(i => ("/v1/register", Http.Provider("wide", $"10.1.{i / 250}.{i % 250 + 1}:8080")))
            .ToArray();

        var (answers, batches, _) = await QueueBehindAStalledBatchAsync(writes);

        Assert.All(answers, status => Assert.Equal(HttpStatusCode.Created, status));
        Assert.Equal(2, batches);
        await notifications.WaitForAsync("wide");
        // 400 lines of "http 10.1.x.y:8080" are past the 8,000-byte payload limit.
        Assert.Equal(["wide"], notifications.Payloads("wide"));
        Assert.Equal(400, (await EndpointsOnNodeBAsync(Http.Subscription(Http.Entry("wide")), 400)).Count);
    }

    /// <summary>
    /// A database behind a dead route answers nothing: the batch in flight waits for its
    /// timeout, and the writes queued behind it are answered 503 with it rather than each
    /// waiting that long in turn (a deep queue would otherwise take minutes to answer).
    /// </summary>
    [Fact]
    public async Task WritesQueuedBehindABatchTheDatabaseNeverAnsweredAre503WithIt()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var proxy = new TcpProxy(database);
        await using var node = new RegistryNode(proxy.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:Database:ConnectTimeoutSeconds"] = "1",
            ["Registry:Database:CommandTimeoutSeconds"] = "1",
            ["Registry:Writes:MaxBatchSize"] = "1",
        });
        using var client = node.CreateClient();
        using (var response = await client.PostJsonAsync("/v1/register", Http.Provider("stalled", "10.0.0.1:80")))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        proxy.Stall();
        var clock = Stopwatch.StartNew();
        var writes = Enumerable.Range(0, 8).Select(i => client.PostJsonAsync("/v1/register", Http.Provider("stalled", $"10.0.1.{i}:80"))).ToArray();
        var responses = await Task.WhenAll(writes).WaitAsync(TimeSpan.FromSeconds(60));

        // One batch of one waits out a timeout (a second on a loaded machine, two with the
        // connect and the statement); eight in turn would take eight to sixteen.
        Assert.All(responses, r => Assert.Equal(HttpStatusCode.ServiceUnavailable, r.StatusCode));
        Assert.All(responses, r => Assert.NotNull(r.Headers.RetryAfter));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(6), $"the eight writes took {clock.Elapsed}");
        foreach (var response in responses)
        {
            response.Dispose();
        }
    }

    /// <summary>Node B's answer once it has <paramref name="count"/> endpoints (long polls until then).</summary>
    private async Task<System.Text.Json.Nodes.JsonArray> EndpointsOnNodeBAsync(string subscription, int count)
    {
        using var nodeB = Cluster.NodeB.CreateClient();
        var (_, version, body) = await nodeB.SubscribeAsync(subscription);
        while (body!["endpoints"]!.AsArray().Count != count)
        {
            (_, version, body) = await nodeB.SubscribeAsync(subscription, version, wait: 10).WaitAsync(TimeSpan.FromSeconds(15));
        }

        return body["endpoints"]!.AsArray();
    }

    /// <summary>
    /// Stalls node A's writer (see <see cref="StalledWriter"/>), sends <paramref name="writes"/>
    /// one after another (each once the previous is queued, so they queue in this order), then
    /// releases it. Returns each write's status and body, and the batches committed meanwhile.
    /// </summary>
    private async Task<(HttpStatusCode[] Statuses, double Batches, string[] Bodies)> QueueBehindAStalledBatchAsync((string Path, string Body)[] writes)
    {
        await using var stall = await StalledWriter.StartAsync(Cluster, Cluster.NodeA, Client);
        using var batches = MeterWatch.Node(Cluster.NodeA, "registry.writes.batches");
        var sent = new List<Task<HttpResponseMessage>>();
        foreach (var (path, body) in writes)
        {
            sent.Add(Client.PostJsonAsync(path, body));
            await stall.Queued.WaitForAsync(sent.Count);
        }

        await stall.ReleaseAsync();
        var responses = await Task.WhenAll(sent).WaitAsync(TimeSpan.FromSeconds(10));
        try
        {
            var bodies = await Task.WhenAll(responses.Select(r => r.Content.ReadAsStringAsync()));
            return (responses.Select(r => r.StatusCode).ToArray(), batches.Total, bodies);
        }
        finally
        {
            foreach (var response in responses)
            {
                response.Dispose();
            }
        }
    }
}
