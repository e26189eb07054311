using System.Diagnostics;
using System.Net;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Registry.Subscription;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>Long polls park until the answer changes or the wait runs out.</summary>
public sealed class LongPollTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private static readonly string Subscription = Http.Subscription(Http.Entry("app"));

    private async Task RegisterAsync(string application, string addr, RegistryNode? node = null)
    {
        using var client = (node ?? Node).CreateClient();
        using var response = await client.PostJsonAsync("/v1/register", Http.Provider(application, addr));
        response.EnsureSuccessStatusCode();
    }

    [Fact]
    public async Task AParkedPollWakesWhenTheAnswerChanges()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        var (_, version, _) = await Client.SubscribeAsync(Subscription);
        using var parked = ParkedPolls.On(Node);

        var poll = Client.SubscribeAsync(Subscription, version, wait: 30);
        await parked.WaitForAsync(1);
        Assert.False(poll.IsCompleted);
        await RegisterAsync("app", "10.0.0.2:80");
        var (status, newVersion, body) = await poll.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(200, status);
        Assert.NotEqual(version, newVersion);
        Assert.Equal(2, body!["endpoints"]!.AsArray().Count);
    }

    [Fact]
    public async Task AWriteIsAnsweredBeforeTheAnswersItChangesAreRecomposedAndReadsAfterItWaitForThem()
    {
        // The witness is told of a change on the loader's thread just before the answers are
        // recomposed: held there, it keeps the node between acknowledging a write and publishing it.
        var held = new HeldRecomposition("app");
        await using var registry = new RegistryNode(await Cluster.CreateDatabaseAsync());
        await using var node = registry.WithWebHostBuilder(b => b.ConfigureTestServices(s => s.AddSingleton<IChangeWitness>(held)));
        using var client = node.CreateClient();
        var (version, waiting) = await HeldRecomposition.RegisterAndParkAsync(node, client, "app", "10.0.0.1:80");

        held.Hold();
        try
        {
            using (var response = await client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.2:80")).WaitAsync(TimeSpan.FromSeconds(10)))
            {
                Assert.Equal(HttpStatusCode.Created, response.StatusCode);
            }

            await held.Entered.WaitAsync(TimeSpan.FromSeconds(10));
            var fresh = client.SubscribeAsync(Subscription);
            var holding = client.SubscribeAsync(Subscription, version, wait: 30);
            await Task.WhenAny(fresh, holding, waiting, Task.Delay(TimeSpan.FromMilliseconds(300)));
            Assert.False(fresh.IsCompleted || holding.IsCompleted || waiting.IsCompleted, "a read after the acknowledged write was answered before the write was in its answer");

            held.Release();
            foreach (var read in new[] { fresh, holding, waiting })
            {
                var (status, newVersion, body) = await read.WaitAsync(TimeSpan.FromSeconds(10));
                Assert.Equal(200, status);
                Assert.NotEqual(version, newVersion);
                Assert.Equal(2, body!["endpoints"]!.AsArray().Count);
            }
        }
        finally
        {
            held.Release();
        }
    }

    [Fact]
    public async Task APollThatTimesOutAnswersTheUnchangedDocument()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        var (_, version, first) = await Client.SubscribeAsync(Subscription);

        var clock = Stopwatch.StartNew();
        var (status, again, body) = await Client.SubscribeAsync(Subscription, version, wait: 1);

        // Held for the 1 s asked, not the 30 s default (the upper bound leaves a busy machine room).
        Assert.InRange(clock.Elapsed, TimeSpan.FromMilliseconds(950), TimeSpan.FromSeconds(15));
        Assert.Equal(200, status);
        Assert.Equal(version, again);
        Assert.Equal(first!.ToJsonString(), body!.ToJsonString());
    }

    [Fact]
    public async Task AChangeToAnotherApplicationWakesNobody()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        var (_, version, _) = await Client.SubscribeAsync(Subscription);
        using var parked = ParkedPolls.On(Node);

        var clock = Stopwatch.StartNew();
        var poll = Client.SubscribeAsync(Subscription, version, wait: 1);
        await parked.WaitForAsync(1);
        await RegisterAsync("other", "10.0.0.2:80");
        var (_, after, _) = await poll;

        Assert.Equal(version, after);
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(950), $"answered after {clock.Elapsed}");
    }

    [Fact]
    public async Task AStaleOrMissingVersionIsAnsweredAtOnce()
    {
        await RegisterAsync("app", "10.0.0.1:80");

        var clock = Stopwatch.StartNew();
        var (_, current, _) = await Client.SubscribeAsync(Subscription, "not-the-version", wait: 30);
        var (_, again, _) = await Client.SubscribeAsync(Subscription, wait: 30);

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5));
        Assert.Equal(current, again);
    }

    [Fact]
    public async Task WaitZeroAnswersAtOnceWithTheCurrentVersion()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        var (_, version, _) = await Client.SubscribeAsync(Subscription);

        var clock = Stopwatch.StartNew();
        var (status, again, _) = await Client.SubscribeAsync(Subscription, version, wait: 0);

        Assert.Equal(200, status);
        Assert.Equal(version, again);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2));
    }

    [Fact]
    public async Task AConditionalGetHoldsAndAnswersNotModifiedWhenUnchanged()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        using var first = await Client.GetAsync("/v1/services/app");
        var etag = first.Headers.ETag!;

        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services/app?wait=1");
        request.Headers.IfNoneMatch.Add(etag);
        var clock = Stopwatch.StartNew();
        using var response = await Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.NotModified, response.StatusCode);
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(950));
        Assert.Equal(etag, response.Headers.ETag);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
    }

    [Theory]
    [InlineData("\"older\", W/\"{0}\"")]
    [InlineData("*")]
    public async Task AConditionalGetHoldsWhenAnyOfItsTagsIsCurrentOrOnStar(string header)
    {
        // RFC 9110: If-None-Match holds a list of entity tags (a cache that kept several answers sends them all) or "*".
        await RegisterAsync("app", "10.0.0.1:80");
        using var first = await Client.GetAsync("/v1/services/app");
        var version = first.Headers.ETag!.Tag.Trim('"');

        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services/app?wait=1");
        request.Headers.TryAddWithoutValidation("If-None-Match", string.Format(System.Globalization.CultureInfo.InvariantCulture, header, version));
        var clock = Stopwatch.StartNew();
        using var response = await Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.NotModified, response.StatusCode);
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(950));
        Assert.Equal(first.Headers.ETag, response.Headers.ETag);
    }

    [Fact]
    public async Task AConditionalGetWokenOntoAnotherOfItsTagsIsAnsweredNotModified()
    {
        // Versions come from content: B is "app" with a second instance, and A again once it goes.
        await RegisterAsync("app", "10.0.0.1:80");
        using (var a = await Client.GetAsync("/v1/services/app"))
        {
            await RegisterAsync("app", "10.0.0.2:80");
            using var b = await Client.GetAsync("/v1/services/app");
            using (await Client.PostJsonAsync("/v1/unregister", Http.Provider("app", "10.0.0.2:80")))
            {
            }

            using var parked = ParkedPolls.On(Node);
            using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services/app?wait=30");
            request.Headers.TryAddWithoutValidation("If-None-Match", $"{a.Headers.ETag}, {b.Headers.ETag}");
            var poll = Client.SendAsync(request);
            await parked.WaitForAsync(1);
            await RegisterAsync("app", "10.0.0.2:80");

            // The caller said it has B too: not its body again (before: 200 with it).
            using var response = await poll.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(HttpStatusCode.NotModified, response.StatusCode);
            Assert.Equal(b.Headers.ETag, response.Headers.ETag);
        }
    }

    [Fact]
    public async Task AConditionalGetWhoseTagsAreNoneCurrentIsAnsweredAtOnce()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services/app?wait=30");
        request.Headers.TryAddWithoutValidation("If-None-Match", "\"older\", \"oldest\"");
        var clock = Stopwatch.StartNew();
        using var response = await Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5));
    }

    [Theory]
    [InlineData("not-a-tag")]
    [InlineData("\"v1\" \"v2\"")]
    public async Task AnIfNoneMatchThatIsNotAListOfEntityTagsIsRefusedNamingTheHeader(string header)
    {
        await RegisterAsync("app", "10.0.0.1:80");
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services/app?wait=30");
        request.Headers.TryAddWithoutValidation("If-None-Match", header);
        using var response = await Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.NotNull((await response.ReadJsonAsync())["errors"]!["If-None-Match"]);
    }

    [Fact]
    public async Task AConditionalGetWakesWithTheNewAnswer()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        var (held, poll) = await ParkConditionalGetAsync(Node, Client);
        await RegisterAsync("app", "10.0.0.2:80");
        using var response = await poll.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.NotEqual(held, response.Headers.ETag);
    }

    [Fact]
    public async Task AConsumerThatLeavesIsUnparked()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        var (_, version, _) = await Client.SubscribeAsync(Subscription);
        using var parked = ParkedPolls.On(Node);
        using var leave = new CancellationTokenSource();

        var poll = Client.SubscribeAsync(Subscription, version, wait: 30, leave.Token);
        await parked.WaitForAsync(1);
        await leave.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => poll);
        await parked.WaitForNoneAsync();

        Assert.Equal(0, parked.Total);
    }

    [Fact]
    public async Task ManyConsumersOfOneSubscriptionAreAllWokenByOneChange()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        var (_, version, _) = await Client.SubscribeAsync(Subscription);
        using var parked = ParkedPolls.On(Node);

        using var recomputed = MeterWatch.Node(Node, "registry.answers.changed");
        using var recomputations = MeterWatch.Node(Node, "registry.answers.recompute_duration");

        var polls = Enumerable.Range(0, 50).Select(_ => Client.SubscribeAsync(Subscription, version, wait: 30)).ToArray();
        await parked.WaitForAsync(50);
        await RegisterAsync("app", "10.0.0.2:80");
        var answers = await Task.WhenAll(polls).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.All(answers, a => Assert.NotEqual(version, a.Version));
        Assert.Single(answers.Select(a => a.Version).Distinct());
        // One recomputation for the one distinct subscription, not one per consumer, and its time measured once.
        Assert.Equal(1, recomputed.Total);
        Assert.Equal(1, recomputations.Total);
    }

    [Fact]
    public async Task AWaitAboveTheCapIsClamped()
    {
        await using var node = new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:Subscriptions:MaxWaitSeconds"] = "1",
            ["Registry:Subscriptions:DefaultWaitSeconds"] = "1",
        });
        using var client = node.CreateClient();
        var (_, version, _) = await client.SubscribeAsync(Subscription);

        var clock = Stopwatch.StartNew();
        var (status, _, _) = await client.SubscribeAsync(Subscription, version, wait: 3600);

        Assert.Equal(200, status);
        // 1 s clamped, plus at most 1/16 s of jitter, plus scheduling on a busy machine (unclamped, it would hold for an hour).
        Assert.InRange(clock.Elapsed, TimeSpan.FromMilliseconds(950), TimeSpan.FromSeconds(15));
    }

    /// <summary>A conditional GET of "app" at its current version, parked on <paramref name="node"/>: that version's ETag, and the poll.</summary>
    private static async Task<(System.Net.Http.Headers.EntityTagHeaderValue Held, Task<HttpResponseMessage> Poll)> ParkConditionalGetAsync(RegistryNode node, HttpClient client)
    {
        using var first = await client.GetAsync("/v1/services/app");
        using var parked = ParkedPolls.On(node);
        var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services/app?wait=30");
        request.Headers.IfNoneMatch.Add(first.Headers.ETag!);
        var poll = client.SendAsync(request);
        await parked.WaitForAsync(1);
        return (first.Headers.ETag!, poll);
    }

    /// <summary>"app" registered, and a node of the test's own whose shutdown releases parked polls over <paramref name="spread"/>.</summary>
    private async Task<RegistryNode> AppOnANodeReleasingOverAsync(string spread)
    {
        await RegisterAsync("app", "10.0.0.1:80");
        return new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:Subscriptions:ShutdownSpread"] = spread,
        });
    }

    /// <summary>
    /// Shutdown releases parked polls at a random moment of its spread; a conditional GET whose
    /// answer changed before then gets the new answer, and a 304 only ever names the version held.
    /// </summary>
    [Fact]
    public async Task AConditionalGetReleasedByShutdownAfterAChangeGetsTheChangeNot304()
    {
        await using var node = await AppOnANodeReleasingOverAsync("00:00:05");
        using var client = node.CreateClient();
        var (held, poll) = await ParkConditionalGetAsync(node, client);

        node.Get<Microsoft.Extensions.Hosting.IHostApplicationLifetime>().StopApplication();
        await RegisterAsync("app", "10.0.0.2:80");
        using var response = await poll.WaitAsync(TimeSpan.FromSeconds(15));

        // Released before the change reached the node (rarely, the spread being 5 s): unchanged, so 304 is right.
        if (response.StatusCode == HttpStatusCode.NotModified)
        {
            Assert.Equal(held, response.Headers.ETag);
        }
        else
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.NotEqual(held, response.Headers.ETag);
            Assert.Equal(2, (await response.ReadJsonAsync())["endpoints"]!.AsArray().Count);
        }
    }

    [Fact]
    public async Task ShutdownReleasesParkedPollsWithTheCurrentAnswer()
    {
        await using var node = await AppOnANodeReleasingOverAsync("00:00:00.500");
        using var client = node.CreateClient();
        var (_, version, first) = await client.SubscribeAsync(Subscription);
        using var parked = ParkedPolls.On(node);
        var polls = Enumerable.Range(0, 5).Select(_ => client.SubscribeAsync(Subscription, version, wait: 30)).ToArray();
        await parked.WaitForAsync(5);

        node.Get<Microsoft.Extensions.Hosting.IHostApplicationLifetime>().StopApplication();
        var answers = await Task.WhenAll(polls).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.All(answers, a =>
        {
            Assert.Equal(200, a.Status);
            Assert.Equal(first!.ToJsonString(), a.Body!.ToJsonString());
        });
    }
}
