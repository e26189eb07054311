using System.Net;
using System.Net.Sockets;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// No client can exhaust a node: overlapping subscriptions share what they share, and the
/// node's caps answer 429 with Retry-After at their edge, never before.
/// </summary>
public sealed class LimitsTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    [Fact]
    public async Task FiveHundredSubscriptionsSharingABigProviderCostLittleMoreThanOne()
    {
        const int Subscriptions = 500;
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database);
        using var client = node.CreateClient();
        // One provider of 2,000 instances with ~400 B of meta each (a 0.9 MB answer), and a
        // small provider of its own for each subscription.
        await InsertBigApplicationAsync(database, "big", 2000);
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await using var insert = new NpgsqlCommand(
                $$"""
                INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
                SELECT 'small-' || i, 'http', '10.2.0.1:80', '{}', 600, clock_timestamp() + interval '600 seconds', clock_timestamp()
                  FROM generate_series(0, {{Subscriptions - 1}}) AS i;
                """, connection);
            await insert.ExecuteNonQueryAsync();
        }

        await node.ReloadAsync();
        static string Subscription(int i) => Http.Subscription(Http.Entry("big"), Http.Entry($"small-{i}"));
        var (versions, grown, _) = await SubscribeAllAsync(Subscriptions, i => SubscribeDrainingAsync(client, Subscription(i)));
        Assert.True(grown < 8 * 1024 * 1024, $"{Subscriptions - 1} more overlapping subscriptions took {grown / 1024 / 1024.0:F1} MiB");

        // Parked on all of them, one registration to the big provider answers each with it.
        using var parked = ParkedPolls.On(node);
        var polls = Enumerable.Range(0, Subscriptions).Select(i => client.SubscribeAsync(Subscription(i), versions[i], wait: 30)).ToArray();
        await parked.WaitForAsync(Subscriptions, TimeSpan.FromSeconds(30));
        using (var response = await client.PostJsonAsync("/v1/register", Http.Provider("big", "10.9.9.9:80")))
        {
            response.EnsureSuccessStatusCode();
        }

        var answers = await Task.WhenAll(polls).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.All(answers, a => Assert.Equal(2002, a.Body!["endpoints"]!.AsArray().Count));
        Assert.Equal(Subscriptions, answers.Select(a => a.Version).Distinct().Count());
        var last = answers[^1].Body!["endpoints"]!.AsArray();
        Assert.Equal(["big", "small-499"], last.Select(e => (string?)e!["application"]).Distinct());
        Assert.Equal("10.9.9.9:80", (string?)last[^2]!["addr"]);
    }

    [Fact]
    public async Task LargeAnswersAreWrittenAFewAtATimeAndASlowReaderHoldsUpOnlyItself()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Subscriptions:LargeAnswerWriters"] = "1",
            ["Registry:Subscriptions:SlowReaderYield"] = "00:00:00.300",
        });
        using var client = node.CreateClient(); // starts the node, which migrates the database
        await InsertBigApplicationAsync(database, "big", 2000);
        await node.ReloadAsync();
        using var waiting = MeterWatch.Node(node, "registry.answers.waiting");
        var subscription = Http.Subscription(Http.Entry("big"));

        // A consumer that takes the headers of a 0.9 MB answer and then stops reading holds the one turn…
        using var stalledClient = node.CreateClient();
        using var stalled = await stalledClient.SendAsync(
            new HttpRequestMessage(HttpMethod.Post, "/v1/subscribe") { Content = Http.Json(subscription) },
            HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, stalled.StatusCode);

        // …so the next large answer waits for it, then goes out once the slow reader yields the turn.
        var next = client.SubscribeAsync(subscription);
        await waiting.WaitForAsync(1);
        var (status, _, body) = await next.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(200, status);
        Assert.Equal(2000, body!["endpoints"]!.AsArray().Count);
        await waiting.WaitUntilAsync(total => total == 0);
    }

    /// <summary>
    /// Selections written differently share what they match: 500 subscriptions each naming the
    /// big provider twice, once with a filter of its own that matches nothing, select all its
    /// instances through 500 different selections. Before, each held its own serialised copy of the
    /// application (0.9 MB: 470 MiB for the 500), one client's requests enough to exhaust a node;
    /// now they share its segments, when they are made and when a change serialises them again.
    /// </summary>
    [Fact]
    public async Task FiveHundredDifferentSelectionsOfTheSameInstancesCostLittleMoreThanOne()
    {
        const int Subscriptions = 500;
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database);
        using var client = node.CreateClient();
        await InsertBigApplicationAsync(database, "big", 2000);
        await node.ReloadAsync();
        static string Subscription(int i) => Http.Subscription(Http.Entry("big"), Http.Entry("big", meta: $$"""{"nonce":"{{i}}"}"""));
        Task<string> SubscribeAsync(int i, string? version = null) => SubscribeDrainingAsync(client, Subscription(i), version);
        var (versions, grown, before) = await SubscribeAllAsync(Subscriptions, i => SubscribeAsync(i));
        Assert.True(grown < 8 * 1024 * 1024, $"{Subscriptions - 1} more selections of the same instances took {grown / 1024 / 1024.0:F1} MiB");

        // Parked on all of them, every instance changes: each selection is recomposed of new segments.
        using var parked = ParkedPolls.On(node);
        var polls = Enumerable.Range(0, Subscriptions).Select(i => SubscribeAsync(i, versions[i])).ToArray();
        await parked.WaitForAsync(Subscriptions, TimeSpan.FromSeconds(30));
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await using var change = new NpgsqlCommand(
                """
                UPDATE instances SET meta = meta || '{"v":"2"}', revision = nextval('instance_revision') WHERE application = 'big';
                SELECT pg_notify('registry_changes', 'big');
                """, connection);
            await change.ExecuteNonQueryAsync();
        }

        var answered = await Task.WhenAll(polls).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.All(answered.Zip(versions), pair => Assert.NotEqual(pair.Second, pair.First));
        grown = GC.GetTotalMemory(forceFullCollection: true) - before;
        Assert.True(grown < 8 * 1024 * 1024, $"recomposed after a change, {Subscriptions - 1} more selections of the same instances held {grown / 1024 / 1024.0:F1} MiB");
    }

    /// <summary>
    /// Makes <paramref name="count"/> subscriptions; their versions, and how much the heap grew from the second on
    /// (the first pays for what they all share), measured from the heap after the first (<c>Before</c>, for later measures).
    /// </summary>
    private static async Task<(string[] Versions, long Grown, long Before)> SubscribeAllAsync(int count, Func<int, Task<string>> subscribe)
    {
        var versions = new string[count];
        versions[0] = await subscribe(0);
        var before = GC.GetTotalMemory(forceFullCollection: true);
        for (var i = 1; i < count; i++)
        {
            versions[i] = await subscribe(i);
        }

        return (versions, GC.GetTotalMemory(forceFullCollection: true) - before, before);
    }

    /// <summary>
    /// Subscribes (a poll when <paramref name="version"/> is given) and returns the answer's version. The heap measured
    /// is the test process's, client included: the answer is read through a small buffer, so the client's parsing of
    /// 0.9 MB documents (which leaves multi-megabyte arrays in each thread's ArrayPool cache) is not counted as the node's.
    /// </summary>
    private static async Task<string> SubscribeDrainingAsync(HttpClient client, string subscription, string? version = null)
    {
        var path = version is null ? "/v1/subscribe" : $"/v1/subscribe?version={Uri.EscapeDataString(version)}&wait=30";
        using var response = await client.PostAsync(path, Http.Json(subscription));
        response.EnsureSuccessStatusCode();
        await using var body = await response.Content.ReadAsStreamAsync();
        var drain = new byte[16 * 1024];
        while (await body.ReadAsync(drain) > 0)
        {
        }

        return response.Headers.ETag!.Tag.Trim('"');
    }

    private static async Task InsertBigApplicationAsync(string database, string application, int instances)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var insert = new NpgsqlCommand(
            """
            INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
            SELECT @application, 'http', '10.1.' || (i / 250) || '.' || (i % 250 + 1) || ':80',
                   jsonb_build_object('zone', 'z' || (i % 7), 'description', repeat('x', 380)), 600, clock_timestamp() + interval '600 seconds', clock_timestamp()
              FROM generate_series(0, @instances - 1) AS i;
            """, connection);
        insert.Parameters.AddWithValue("application", application);
        insert.Parameters.AddWithValue("instances", instances);
        await insert.ExecuteNonQueryAsync();
    }

    [Fact]
    public async Task ParkedPollsPastAClientsOrANodesLimitAre429AtTheEdgeAndNotBefore()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Limits:MaxParkedPerClient"] = "2",
            ["Registry:Limits:MaxParked"] = "3",
            ["Registry:Limits:RetryAfterSeconds"] = "7",
        });
        using var client = node.CreateClient();
        using var refusals = MeterWatch.Node(node, "registry.limits.rejections", "limit", "parked_per_client");
        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        using var parked = ParkedPolls.On(node);
        using var stop = new CancellationTokenSource();

        var held = Enumerable.Range(0, 2).Select(_ => client.SubscribeAsync(subscription, version, wait: 30, stop.Token)).ToArray();
        await parked.WaitForAsync(2);
        using (var refused = await client.PostJsonAsync($"/v1/subscribe?version={version}&wait=30", subscription))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(7), refused.Headers.RetryAfter?.Delta);
            Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
            Assert.Contains("MaxParkedPerClient", (string?)(await refused.ReadJsonAsync())["detail"], StringComparison.Ordinal);
        }

        // An answer that need not be held is never refused, and the held ones stay held.
        var (status, _, _) = await client.SubscribeAsync(subscription);
        Assert.Equal(200, status);
        Assert.Equal(1, refusals.Total);
        Assert.All(held, poll => Assert.False(poll.IsCompleted));
        await stop.CancelAsync();
        await parked.WaitForNoneAsync();
    }

    /// <summary>
    /// A view is kept while a parked poll holds it, and the node holds MaxSubscriptionCharacters of them in all. Before,
    /// one client parking a few hundred distinct long subscriptions filled that, and every client's new subscriptions
    /// were refused. Each client's distinct subscriptions held parked now count against a share of their own; polls of
    /// one subscription count it once.
    /// </summary>
    [Fact]
    public async Task DistinctSubscriptionsPastAClientsShareOfCharactersAre429()
    {
        await using var node = new RegistryNode(await Cluster.CreateDatabaseAsync(), new Dictionary<string, string?>
        {
            ["Registry:Limits:MaxSubscriptionCharactersPerClient"] = "150",
        });
        using var client = node.CreateClient();
        using var refusals = MeterWatch.Node(node, "registry.limits.rejections", "limit", "subscription_characters_per_client");
        string Selecting(char zone) => Http.Subscription(Http.Entry("app", meta: $$"""{"zone":"{{new string(zone, 80)}}"}"""));
        var (first, second) = (Selecting('a'), Selecting('b'));
        var (_, firstVersion, _) = await client.SubscribeAsync(first);
        var (_, secondVersion, _) = await client.SubscribeAsync(second);
        using var parked = ParkedPolls.On(node);
        using var stop = new CancellationTokenSource();

        var held = Enumerable.Range(0, 3).Select(_ => client.SubscribeAsync(first, firstVersion, wait: 30, stop.Token)).ToArray();
        await parked.WaitForAsync(3);
        using (var refused = await client.PostJsonAsync($"/v1/subscribe?version={secondVersion}&wait=30", second))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
            Assert.Contains("MaxSubscriptionCharactersPerClient", (string?)(await refused.ReadJsonAsync())["detail"], StringComparison.Ordinal);
        }

        Assert.Equal(1, refusals.Total);
        await stop.CancelAsync();
        await parked.WaitForNoneAsync();

        // Let go, the share is the client's again.
        using var again = new CancellationTokenSource();
        var other = client.SubscribeAsync(second, secondVersion, wait: 30, again.Token);
        await parked.WaitForAsync(1);
        await again.CancelAsync();
        await parked.WaitForNoneAsync();
    }

    [Fact]
    public async Task WritesWaitingPastAClientsShareAre429WhileTheNodeTakesOthers()
    {
        // One client looping writes (of one instance: each then commits a batch of its own) would otherwise fill the
        // node's write queue, and every other client's registrations would be refused with 503.
        await using var node = new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:Limits:MaxWritesPerClient"] = "2",
            ["Registry:Limits:RetryAfterSeconds"] = "7",
            ["Registry:Network:TrustedProxies:0"] = "127.0.0.1",
        });
        node.UseKestrel(0);
        node.StartServer();
        // The test is the proxy hop, forwarding for two clients.
        using var client = node.CreateClient();
        client.DefaultRequestHeaders.Add("X-Forwarded-For", "203.0.113.1");
        using var other = node.CreateClient();
        other.DefaultRequestHeaders.Add("X-Forwarded-For", "203.0.113.2");
        Task<HttpResponseMessage> waiting;
        Task<HttpResponseMessage> others;
        await using (var stall = await StalledWriter.StartAsync(Cluster, node, client))
        {
            // The stalled write is the client's first; a second waits in the queue.
            waiting = client.PostJsonAsync("/v1/register", Http.Provider("share", "10.0.0.1:80"));
            await stall.Queued.WaitForAsync(1);

            foreach (var path in new[] { "/v1/register", "/v1/unregister", "/v1/sessions" })
            {
                using var refused = await client.PostJsonAsync(path, Http.Provider("share", "10.0.0.2:80"));
                Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
                Assert.Equal(TimeSpan.FromSeconds(7), refused.Headers.RetryAfter?.Delta);
                Assert.Contains("MaxWritesPerClient", (string?)(await refused.ReadJsonAsync())["detail"], StringComparison.Ordinal);
            }

            // Another client's write is taken meanwhile.
            others = other.PostJsonAsync("/v1/register", Http.Provider("share", "10.0.0.3:80"));
            await stall.Queued.WaitForAsync(2);
            await stall.ReleaseAsync();
        }

        foreach (var answer in new[] { waiting, others })
        {
            using var answered = await answer.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(HttpStatusCode.Created, answered.StatusCode);
        }

        // Answered, its writes no longer count.
        using var next = await client.PostJsonAsync("/v1/register", Http.Provider("share", "10.0.0.2:80"));
        Assert.Equal(HttpStatusCode.Created, next.StatusCode);
    }

    [Fact]
    public async Task AskingWhoWatchesIsHeldAsAParkedRequestAndRefusedPastTheClientsLimit()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Limits:MaxParkedPerClient"] = "1",
        });
        using var client = node.CreateClient();
        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        using var parked = ParkedPolls.On(node);
        using var stop = new CancellationTokenSource();
        var held = client.SubscribeAsync(subscription, version, wait: 30, stop.Token);
        await parked.WaitForAsync(1);

        // Each question is held until every node answers and costs each of them a notification: no client asks without bound.
        using (var refused = await client.GetAsync("/v1/services/app/watchers"))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
            Assert.Contains("MaxParkedPerClient", (string?)(await refused.ReadJsonAsync())["detail"], StringComparison.Ordinal);
        }

        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => held);
        await parked.WaitForNoneAsync();
        using var answered = await client.GetAsync("/v1/services/app/watchers");
        Assert.Equal(HttpStatusCode.OK, answered.StatusCode);
    }

    /// <summary>
    /// A drain or watchers question is quick when nobody watches, and costs every node a notification to read and an
    /// answer that every node hears: a client looping on them is held to a rate (before, only to the parked limits,
    /// which a quick question never reaches). A drain refused is refused before anything is removed.
    /// </summary>
    [Fact]
    public async Task DrainAndWatchersQuestionsPastAClientsRateAre429AndRemoveNothing()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Drain:MaxQuestionsPerSecondPerClient"] = "1",
        });
        using var client = node.CreateClient();
        var addrs = Enumerable.Range(1, 10).Select(i => $"10.0.0.{i}:80").ToArray();
        foreach (var addr in addrs)
        {
            using var registered = await client.PostJsonAsync("/v1/register", Http.Provider("app", addr));
            registered.EnsureSuccessStatusCode();
        }

        // One a second: of ten asked at once, all but one are refused, unless they take seconds to arrive on a busy machine.
        var watchers = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => client.GetAsync("/v1/services/app/watchers")));
        var drains = await Task.WhenAll(addrs.Select(addr => client.PostJsonAsync("/v1/unregister?drain=5", Http.Provider("app", addr))));

        foreach (var answers in new[] { watchers, drains })
        {
            var refused = answers.Where(r => r.StatusCode == HttpStatusCode.TooManyRequests).ToList();
            Assert.NotEmpty(refused);
            Assert.All(refused, r => Assert.NotNull(r.Headers.RetryAfter));
            Assert.Contains("MaxQuestionsPerSecondPerClient", (string?)(await refused[0].ReadJsonAsync())["detail"], StringComparison.Ordinal);
            Assert.All(answers.Except(refused), r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        }

        var (_, _, body) = await client.SubscribeAsync(Http.Subscription(Http.Entry("app")));
        Assert.Equal(drains.Count(r => r.StatusCode == HttpStatusCode.TooManyRequests), body!["endpoints"]!.AsArray().Count);
        foreach (var response in watchers.Concat(drains))
        {
            response.Dispose();
        }
    }

    [Fact]
    public async Task ANodeHoldsNoMoreParkedPollsThanItsLimitWhateverTheClients()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Limits:MaxParked"] = "3",
        });
        using var client = node.CreateClient();
        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        using var parked = ParkedPolls.On(node);
        using var stop = new CancellationTokenSource();

        var held = Enumerable.Range(0, 3).Select(_ => client.SubscribeAsync(subscription, version, wait: 30, stop.Token)).ToArray();
        await parked.WaitForAsync(3);
        var (status, _, body) = await client.SubscribeAsync(subscription, version, wait: 30);

        Assert.Equal(429, status);
        Assert.Contains("MaxParked", (string?)body!["detail"], StringComparison.Ordinal);
        await stop.CancelAsync();
        await parked.WaitForNoneAsync();
        (status, _, _) = await client.SubscribeAsync(subscription, version, wait: 0);
        Assert.Equal(200, status);
    }

    [Theory]
    // Three one-provider subscriptions fill the count.
    [InlineData("MaxSubscriptions", 3, 3, 0)]
    // Two of 64 providers with long meta fill the size (a third would not fit, however few there are).
    [InlineData("MaxSubscriptionCharacters", 80_000, 2, 500)]
    public async Task ANewDistinctSubscriptionPastTheNodesLimitIs429WhileKnownOnesAreServed(string limit, int value, int held, int metaLength)
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            [$"Registry:Limits:{limit}"] = value.ToString(System.Globalization.CultureInfo.InvariantCulture),
        });
        using var client = node.CreateClient();
        using var parked = ParkedPolls.On(node);
        using var stop = new CancellationTokenSource();
        var meta = metaLength == 0 ? null : $$"""{"note":"{{new string('m', metaLength)}}"}""";
        string Distinct(int n) => metaLength == 0
            ? Http.Subscription(Http.Entry($"app-{n}"))
            : Http.Subscription([.. Enumerable.Range(0, 64).Select(i => Http.Entry($"app-{n}-{i}", "http", meta))]);
        var polls = new List<Task<(int, string?, System.Text.Json.Nodes.JsonNode?)>>();
        for (var n = 0; n < held; n++)
        {
            var (_, version, _) = await client.SubscribeAsync(Distinct(n));
            polls.Add(client.SubscribeAsync(Distinct(n), version, wait: 30, stop.Token));
        }

        await parked.WaitForAsync(held);
        var (refused, _, body) = await client.SubscribeAsync(Distinct(held));
        var (known, _, _) = await client.SubscribeAsync(Distinct(0));

        Assert.Equal(429, refused);
        Assert.Contains(limit, (string?)body!["detail"], StringComparison.Ordinal);
        Assert.Equal(200, known);
        await stop.CancelAsync();
        await parked.WaitForNoneAsync();

        // Once nobody holds them, idle subscriptions make room for new ones.
        (refused, _, _) = await client.SubscribeAsync(Distinct(held));
        Assert.Equal(200, refused);
    }

    [Fact]
    public async Task SubscriptionsSelectingDifferentInstancesPastTheNodesByteLimitAre429WhileSharedOnesCountOnce()
    {
        // Per-instance meta lets each subscription select a different few instances: their endpoints are serialised
        // for each, and nothing but a byte limit bounds what they keep (MaxSubscriptions times the largest selection).
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?> { ["Registry:Limits:MaxSubscriptionBytes"] = "20000" });
        using var client = node.CreateClient();
        var pad = new string('p', 500);
        for (var i = 0; i < 60; i++)
        {
            using var response = await client.PostJsonAsync("/v1/register", Http.Provider("big", $"10.0.0.{i}:80", $$"""{"group":"g{{i % 6}}","pad":"{{pad}}"}"""));
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        using var parked = ParkedPolls.On(node);
        using var stop = new CancellationTokenSource();
        var polls = new List<Task<(int, string?, System.Text.Json.Nodes.JsonNode?)>>();
        async Task<(int Status, System.Text.Json.Nodes.JsonNode? Body)> HoldAsync(string subscription)
        {
            var (status, version, body) = await client.SubscribeAsync(subscription);
            if (status == 200)
            {
                polls.Add(client.SubscribeAsync(subscription, version, wait: 30, stop.Token));
                await parked.WaitForAsync(polls.Count);
            }

            return (status, body);
        }

        string Group(int group, string? other = null) => Http.Subscription(
            [Http.Entry("big", null, $$"""{"group":"g{{group}}"}"""), .. other is null ? Array.Empty<string>() : [Http.Entry(other)]]);

        // Twenty distinct subscriptions that all select the same ten instances (about 6 KB): held once, all taken.
        for (var k = 0; k < 20; k++)
        {
            Assert.Equal(200, (await HoldAsync(Group(0, $"other-{k}"))).Status);
        }

        // Each other group is 6 KB more: the limit refuses one before the sixth.
        var refused = false;
        for (var group = 1; group < 6 && !refused; group++)
        {
            var (status, body) = await HoldAsync(Group(group));
            if (status != 200)
            {
                Assert.Equal(429, status);
                Assert.Contains("MaxSubscriptionBytes", (string?)body!["detail"], StringComparison.Ordinal);
                refused = true;
            }
        }

        Assert.True(refused, "every group was taken: nothing bounds the bytes distinct selections keep");
        Assert.Equal(200, (await client.SubscribeAsync(Group(0, "other-0"))).Item1);
        // A new combination of selections already held keeps no byte more: taken at the limit.
        Assert.Equal(200, (await HoldAsync(Http.Subscription(Http.Entry("big", null, """{"group":"g0"}"""), Http.Entry("other-0"), Http.Entry("other-1")))).Status);

        // A change recomposes the shared selection; once nobody holds them, the next change drops the idle
        // subscriptions, and what they kept is counted off to the last byte.
        using (await client.PostJsonAsync("/v1/register", Http.Provider("big", "10.0.0.0:80", $$"""{"group":"g0","pad":"changed"}""")))
        {
        }

        await stop.CancelAsync();
        await parked.WaitForNoneAsync();
        Assert.True(MeterWatch.Read(node, "registry.subscriptions.bytes") > 0);
        using (await client.PostJsonAsync("/v1/register", Http.Provider("big", "10.0.0.1:80", $$"""{"group":"g1","pad":"changed"}""")))
        {
        }

        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (MeterWatch.Read(node, "registry.subscriptions.distinct") > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        Assert.Equal(0, MeterWatch.Read(node, "registry.subscriptions.distinct"));
        Assert.Equal(0, MeterWatch.Read(node, "registry.subscriptions.bytes"));
    }

    [Fact]
    public async Task ASubscriptionNobodyHoldsGoesAfterItsIdleTimeWhileAHeldOrRecentlyReadOneStays()
    {
        // Names read once (a job's, a deploy's) whose applications never change again: before,
        // each stayed composed until the node's limit of distinct subscriptions was reached.
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Subscriptions:KeepIdleFor"] = "00:00:02",
        });
        using var client = node.CreateClient();
        using var parked = ParkedPolls.On(node);
        using var stop = new CancellationTokenSource();
        var (_, version, _) = await client.SubscribeAsync(Http.Subscription(Http.Entry("held")));
        var held = client.SubscribeAsync(Http.Subscription(Http.Entry("held")), version, wait: 30, stop.Token);
        await parked.WaitForAsync(1);
        // One read every second or so (as a client reading with GET), the first before the others.
        var started = DateTime.UtcNow;
        Assert.Equal(200, (await client.SubscribeAsync(Http.Subscription(Http.Entry("read-often")))).Item1);
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(200, (await client.SubscribeAsync(Http.Subscription(Http.Entry($"job-{i}")))).Item1);
        }

        Assert.Equal(7, MeterWatch.Read(node, "registry.subscriptions.distinct"));

        // The idle time is the behaviour under test: nothing signals it.
        await Task.Delay(started.AddSeconds(1.5) - DateTime.UtcNow);
        Assert.Equal(200, (await client.SubscribeAsync(Http.Subscription(Http.Entry("read-often")))).Item1);
        await Task.Delay(started.AddSeconds(3) - DateTime.UtcNow);
        Assert.Equal(200, (await client.SubscribeAsync(Http.Subscription(Http.Entry("read-often")))).Item1);

        // The jobs' went; the held one and the one read a moment ago stay.
        Assert.Equal(2, MeterWatch.Read(node, "registry.subscriptions.distinct"));
        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => held);
    }

    [Fact]
    public async Task PerClientLimitsSeeTheClientBehindATrustedProxyAndNobodyElsesClaim()
    {
        var database = await Cluster.CreateDatabaseAsync();
        var limits = new Dictionary<string, string?> { ["Registry:Limits:MaxParkedPerClient"] = "1" };
        await using var behindProxy = new RegistryNode(database, new Dictionary<string, string?>(limits) { ["Registry:Network:TrustedProxies:0"] = "127.0.0.1" });
        await using var exposed = new RegistryNode(database, limits);
        foreach (var node in new[] { behindProxy, exposed })
        {
            node.UseKestrel(0);
            node.StartServer();
        }

        // The test is the proxy hop: it connects from 127.0.0.1 and names the client it forwards for.
        var sameClient = await TwoClientsEachParkingOnceAsync(behindProxy, "203.0.113.1", "203.0.113.1");
        var twoClients = await TwoClientsEachParkingOnceAsync(behindProxy, "203.0.113.1", "203.0.113.2");
        var untrusted = await TwoClientsEachParkingOnceAsync(exposed, "203.0.113.1", "203.0.113.2");

        Assert.Equal("200 429", sameClient);
        Assert.Equal("200 200", twoClients);
        Assert.Equal("200 429", untrusted);
    }

    [Fact]
    public async Task AnIPv6ClientCountsAsItsSlash64ForPerClientLimits()
    {
        // A host is given a /64 and may send from any address in it: each address its own client would multiply its share.
        var database = await Cluster.CreateDatabaseAsync();
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Limits:MaxParkedPerClient"] = "1",
            ["Registry:Network:TrustedProxies:0"] = "127.0.0.1",
        });
        node.UseKestrel(0);
        node.StartServer();

        var oneHost = await TwoClientsEachParkingOnceAsync(node, "2001:db8:1:2::10", "2001:db8:1:2:ffff::20");
        var twoHosts = await TwoClientsEachParkingOnceAsync(node, "2001:db8:1:2::10", "2001:db8:1:3::10");

        Assert.Equal("200 429", oneHost);
        Assert.Equal("200 200", twoHosts);
    }

    [Fact]
    public async Task PerClientLimitsSeeTheClientBehindTwoTrustedProxiesAndStopAtTheFirstUntrustedHop()
    {
        var database = await Cluster.CreateDatabaseAsync();
        // A load balancer (10.1.0.0/16) in front of nginx (the test, on 127.0.0.1): each appends the address it saw.
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Limits:MaxParkedPerClient"] = "1",
            ["Registry:Network:TrustedProxies:0"] = "127.0.0.1",
            ["Registry:Network:TrustedProxies:1"] = "10.1.0.0/16",
        });
        node.UseKestrel(0);
        node.StartServer();

        var twoClients = await TwoClientsEachParkingOnceAsync(node, "203.0.113.1, 10.1.0.5", "203.0.113.2, 10.1.0.5");
        // An untrusted hop is the client, whatever it claims to forward for.
        var oneClientClaimingTwo = await TwoClientsEachParkingOnceAsync(node, "203.0.113.1, 198.51.100.7, 10.1.0.5", "203.0.113.2, 198.51.100.7, 10.1.0.5");

        Assert.Equal("200 200", twoClients);
        Assert.Equal("200 429", oneClientClaimingTwo);
    }

    /// <summary>Parks one poll forwarded for <paramref name="first"/>, then tries one for <paramref name="second"/>; the statuses (200 for one that parked).</summary>
    private static async Task<string> TwoClientsEachParkingOnceAsync(RegistryNode node, string first, string second)
    {
        using var client = node.CreateClient();
        var subscription = Http.Subscription(Http.Entry("app"));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        using var parked = ParkedPolls.On(node);
        using var stop = new CancellationTokenSource();
        var held = PollForAsync(client, first, subscription, version!, stop.Token);
        await parked.WaitForAsync(1);
        var refusedOrParked = PollForAsync(client, second, subscription, version!, stop.Token);
        var finished = await Task.WhenAny(refusedOrParked, parked.WaitForAsync(2));
        var statuses = $"200 {(finished == refusedOrParked ? (int)(await refusedOrParked).StatusCode : 200)}";
        await stop.CancelAsync();
        await parked.WaitForNoneAsync();
        return statuses;
    }

    private static async Task<HttpResponseMessage> PollForAsync(HttpClient client, string forwardedFor, string subscription, string version, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/subscribe?version={version}&wait=30") { Content = Http.Json(subscription) };
        request.Headers.Add("X-Forwarded-For", forwardedFor);
        try
        {
            return await client.SendAsync(request, cancellationToken);
        }
        catch (OperationCanceledException)
        {
            return new HttpResponseMessage(HttpStatusCode.OK);
        }
    }

    [Fact]
    public async Task AFloodOfReadinessChecksCostsTheDatabaseAtMostOneStatementASecond()
    {
        const string ApplicationName = "registry-readyz-test";
        var database = await Cluster.CreateDatabaseAsync(ApplicationName);
        await using var node = new RegistryNode(database, new Dictionary<string, string?>
        {
            // Keep the node's other statements out of the window.
            ["Registry:Leases:SweepInterval"] = "01:00:00",
            ["Registry:Leases:LivenessInterval"] = "01:00:00",
            ["Registry:Membership:RefreshInterval"] = "01:00:00",
            ["Registry:Leases:GraceGap"] = "02:00:00",
            ["Registry:ChangeFeed:ConsistencyCheckInterval"] = "01:00:00",
        });
        using var client = node.CreateClient();
        using (var first = await client.GetAsync("/readyz"))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        }

        using var statements = MeterWatch.NpgsqlStatements(ApplicationName);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var answered = 0;
        while (clock.Elapsed < TimeSpan.FromSeconds(2.5))
        {
            var flood = await Task.WhenAll(Enumerable.Range(0, 50).Select(_ => client.GetAsync("/readyz")));
            Assert.All(flood, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
            answered += flood.Length;
            foreach (var response in flood)
            {
                response.Dispose();
            }
        }

        Assert.True(answered >= 100, $"only {answered} checks answered");
        Assert.InRange(statements.Total, 1, Math.Ceiling(clock.Elapsed.TotalSeconds) + 1);
    }

    /// <summary>
    /// Kestrel's connection limit is the node's: one client opening connections and sending nothing could hold all
    /// of them. Past its own limit a client's new connection is closed before anything is read, while its open ones
    /// and other clients are served, and one it closes makes room again (before, every connection was taken).
    /// </summary>
    [Fact]
    public async Task AClientsConnectionsPastItsLimitAreClosedWhileItsOpenOnesAndOtherClientsAreServed()
    {
        await using var node = new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?> { ["Registry:Network:MaxConnectionsPerClient"] = "2" });
        node.UseKestrel(0);
        node.StartServer();
        var port = node.CreateClient().BaseAddress!.Port;
        using var open = MeterWatch.Node(node, "kestrel.active_connections");

        // Each answered once, so both are counted before the next one comes.
        using var first = await ConnectAsync(port, IPAddress.Loopback);
        using var second = await ConnectAsync(port, IPAddress.Loopback);
        var answered = new[] { await AskAsync(first), await AskAsync(second) };
        using var third = await ConnectAsync(port, IPAddress.Loopback);
        var thirdClosed = await ClosedByServerAsync(third);
        using var otherClient = await ConnectAsync(port, IPAddress.Parse("127.0.0.2"));
        var otherAnswered = await AskAsync(otherClient);
        var firstAgain = await AskAsync(first);

        second.Dispose();
        await open.WaitUntilAsync(connections => connections <= 2); // first and otherClient
        using var fourth = await ConnectAsync(port, IPAddress.Loopback);
        var fourthAnswered = await AskAsync(fourth);

        Assert.Equal(["HTTP/1.1 200 OK", "HTTP/1.1 200 OK"], answered);
        Assert.True(thirdClosed);
        Assert.Equal("HTTP/1.1 200 OK", otherAnswered);
        Assert.Equal("HTTP/1.1 200 OK", firstAgain);
        Assert.Equal("HTTP/1.1 200 OK", fourthAnswered);
    }

    /// <summary>
    /// Many clients come through a load balancer: its connections are not limited as one client's. And the limit may
    /// be turned off (0), where many clients share an address without a proxy (a NAT gateway).
    /// </summary>
    [Theory]
    [InlineData("1", "127.0.0.1")]
    [InlineData("0", null)]
    public async Task ATrustedProxysConnectionsAreNotLimitedNorAnyWithTheLimitOff(string limit, string? proxy)
    {
        var settings = new Dictionary<string, string?> { ["Registry:Network:MaxConnectionsPerClient"] = limit };
        if (proxy is not null)
        {
            settings["Registry:Network:TrustedProxies:0"] = proxy;
        }

        await using var node = new RegistryNode(Cluster.ConnectionString, settings);
        node.UseKestrel(0);
        node.StartServer();
        var port = node.CreateClient().BaseAddress!.Port;

        using var first = await ConnectAsync(port, IPAddress.Loopback);
        using var second = await ConnectAsync(port, IPAddress.Loopback);

        Assert.Equal("HTTP/1.1 200 OK", await AskAsync(first));
        Assert.Equal("HTTP/1.1 200 OK", await AskAsync(second));
    }

    private static async Task<Socket> ConnectAsync(int port, IPAddress from)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(from, 0));
        await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port));
        return socket;
    }

    /// <summary>The status line of HEAD /healthz on a kept-alive connection (no body follows the headers).</summary>
    private static async Task<string> AskAsync(Socket socket)
    {
        await socket.SendAsync("HEAD /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"u8.ToArray());
        var received = new List<byte>();
        var buffer = new byte[1024];
        while (!System.Text.Encoding.ASCII.GetString([.. received]).Contains("\r\n\r\n", StringComparison.Ordinal))
        {
            var read = await socket.ReceiveAsync(buffer.AsMemory()).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            if (read == 0)
            {
                return "closed";
            }

            received.AddRange(buffer.AsSpan(0, read));
        }

        return System.Text.Encoding.ASCII.GetString([.. received]).Split("\r\n")[0];
    }

    private static async Task<bool> ClosedByServerAsync(Socket socket)
    {
        try
        {
            return await socket.ReceiveAsync(new byte[1].AsMemory()).AsTask().WaitAsync(TimeSpan.FromSeconds(10)) == 0;
        }
        catch (SocketException)
        {
            return true; // reset
        }
    }

    [Fact]
    public void KestrelsLimitsAreSetFromTheShippedSettings()
    {
        var limits = Node.Get<Microsoft.Extensions.Options.IOptions<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions>>().Value.Limits;

        Assert.Equal(60_000, limits.MaxConcurrentConnections);
        Assert.Equal(TimeSpan.FromSeconds(10), limits.RequestHeadersTimeout);
        Assert.Equal(32 * 1024, limits.MaxRequestHeadersTotalSize);
        Assert.Equal(240, limits.MinRequestBodyDataRate!.BytesPerSecond);
    }
}
