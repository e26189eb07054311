using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests.Access;

/// <summary>Access beyond the matrix: whole refusals, propagation between nodes, what stays open, limits and the audit trail.</summary>
[Collection(AccessTestsDefinition.Name)]
public sealed class AccessTests(AccessCluster cluster)
{
    private const string CredentialEnded = "closed: the credential that opened this session was revoked or has expired";

    private static string Provider(string application) => Http.Provider(application, "10.0.0.2:8080");

    [Fact]
    public async Task ASubscriptionNamingOneForbiddenProviderIsRefusedWhole()
    {
        using var reader = AccessCluster.Client(cluster.NodeA, cluster.Credentials["subscribe-only"]);

        using var response = await reader.PostJsonAsync("/v1/subscribe", Http.Subscription(Http.Entry("payments"), Http.Entry("billing")));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.Equal("billing", (string?)problem["application"]);
        Assert.Equal("subscribe", (string?)problem["scope"]);
    }

    [Fact]
    public async Task ListingServicesShowsOnlyWhatTheCredentialMaySubscribeToUnlessItIsAdmin()
    {
        using (var bootstrap = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(AccessCluster.Bootstrap)))
        {
            Assert.True((await bootstrap.PostJsonAsync("/v1/register", Provider("payments"))).IsSuccessStatusCode);
            Assert.True((await bootstrap.PostJsonAsync("/v1/register", Provider("billing"))).IsSuccessStatusCode);
        }

        using var reader = AccessCluster.Client(cluster.NodeA, cluster.Credentials["subscribe-only"]);
        using var admin = AccessCluster.Client(cluster.NodeA, cluster.Credentials["admin"]);

        var seen = (await (await reader.GetAsync(new Uri("/v1/services", UriKind.Relative))).ReadJsonAsync())["services"]!.AsArray().Select(s => (string)s!["application"]!);
        var all = (await (await admin.GetAsync(new Uri("/v1/services", UriKind.Relative))).ReadJsonAsync())["services"]!.AsArray().Select(s => (string)s!["application"]!);

        Assert.Equal(["payments"], seen);
        Assert.Contains("billing", all);
        Assert.Contains("payments", all);
    }

    [Fact]
    public async Task ATokenCreatedOnNodeAWorksOnNodeBAndItsRevocationIsRefusedThereWithinASecond()
    {
        using var nodeB = cluster.NodeB.CreateClient();
        var (id, secret) = await cluster.CreateTokenAsync("""{"description":"short-lived","register":["payments"]}""");
        using var client = AccessCluster.Client(cluster.NodeB, AccessCluster.Bearer(secret));

        var created = Stopwatch.StartNew();
        var accepted = await WaitForStatusAsync(client, HttpStatusCode.OK, TimeSpan.FromSeconds(1));
        Assert.True(accepted, $"node B did not accept the new token within 1 s ({created.ElapsedMilliseconds} ms)");

        using (var admin = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(AccessCluster.Bootstrap)))
        {
            Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync(new Uri($"/v1/tokens/{id}", UriKind.Relative))).StatusCode);
        }

        var revoked = Stopwatch.StartNew();
        var refused = await WaitForStatusAsync(client, HttpStatusCode.Unauthorized, TimeSpan.FromSeconds(1));
        Assert.True(refused, $"node B still accepted the revoked token after {revoked.ElapsedMilliseconds} ms");
    }

    [Fact]
    public async Task RevokingTheTokenThatOpenedASessionClosesItWithinASecondAndLeavesItsLeaseToRunOut()
    {
        var (id, secret) = await cluster.CreateTokenAsync("""{"description":"session holder","register":["payments"]}""");
        using var holder = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(secret));
        await using var session = await SessionReader.StartAsync(holder, Http.Provider("payments", "10.0.0.9:80"), ttl: 60);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);

        using (var admin = AccessCluster.Client(cluster.NodeB, AccessCluster.Bearer(AccessCluster.Bootstrap)))
        {
            Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync(new Uri($"/v1/tokens/{id}", UriKind.Relative))).StatusCode);
        }

        var revoked = Stopwatch.StartNew();
        var last = await ReadToEndAsync(session);
        Assert.True(revoked.Elapsed < TimeSpan.FromSeconds(1.5), $"the session was still open {revoked.ElapsedMilliseconds} ms after its token was revoked");
        Assert.Equal(CredentialEnded, last);
        // Not removed: like a heartbeat's, the lease runs out, since nothing valid renews it.
        Assert.Contains("10.0.0.9:80", await AdminReadAsync("/v1/services/payments"));
        Assert.Equal(HttpStatusCode.Unauthorized, (await holder.PostJsonAsync("/v1/heartbeat", Http.Provider("payments", "10.0.0.9:80"))).StatusCode);
    }

    [Fact]
    public async Task RevokingTheTokenAPollIsHeldWithAnswersIt401WithinASecond()
    {
        // An application of its own: an instance of another test's expiring meanwhile would answer the poll.
        var (id, secret) = await cluster.CreateTokenAsync("""{"description":"poll holder","subscribe":["held-poll"]}""");
        using var holder = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(secret));
        var poll = await ParkAsync(holder, "held-poll");

        using (var admin = AccessCluster.Client(cluster.NodeB, AccessCluster.Bearer(AccessCluster.Bootstrap)))
        {
            Assert.Equal(HttpStatusCode.NoContent, (await admin.DeleteAsync(new Uri($"/v1/tokens/{id}", UriKind.Relative))).StatusCode);
        }

        var revoked = Stopwatch.StartNew();
        using var answer = await poll.WaitAsync(TimeSpan.FromSeconds(10));
        // Not the next change (or the timeout's answer) to a credential that no longer exists.
        Assert.True(revoked.Elapsed < TimeSpan.FromSeconds(1.5), $"the poll was still held {revoked.ElapsedMilliseconds} ms after its token was revoked");
        Assert.Equal(HttpStatusCode.Unauthorized, answer.StatusCode);
        Assert.Equal("application/problem+json", answer.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task APollHeldWithATokenThatExpiresMeanwhileIsAnswered401WhenItExpires()
    {
        var expires = DateTimeOffset.UtcNow.AddSeconds(3);
        var (_, secret) = await cluster.CreateTokenAsync(
            $$"""{"description":"expiring poll holder","subscribe":["expiring-poll"],"expires":"{{expires.UtcDateTime:O}}"}""");
        using var holder = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(secret));
        var poll = await ParkAsync(holder, "expiring-poll");

        // Not the timeout's answer, half a minute later, to a credential that stopped being valid.
        using var answer = await poll.WaitAsync(TimeSpan.FromSeconds(10));
        // The timer's clock and the wall clock may differ by a few milliseconds.
        Assert.InRange(DateTimeOffset.UtcNow, expires.AddMilliseconds(-50), expires.AddSeconds(2));
        Assert.Equal(HttpStatusCode.Unauthorized, answer.StatusCode);
        Assert.Equal("application/problem+json", answer.Content.Headers.ContentType?.MediaType);
        Assert.Contains("has expired", (string?)(await answer.ReadJsonAsync())["detail"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task ASessionOpenedWithAJwtClosesWhenTheJwtExpires()
    {
        await using var node = cluster.Start(new() { ["Registry:Auth:Jwt:ClockSkew"] = "00:00:00" });
        var expires = DateTime.UtcNow.AddSeconds(3);
        using var holder = AccessCluster.Client(node, AccessCluster.Bearer(cluster.Jwt(
            new() { ["sub"] = "system:serviceaccount:payments:api", ["registry_register"] = new JsonArray("payments") }, expires)));
        await using var session = await SessionReader.StartAsync(holder, Http.Provider("payments", "10.0.0.10:80"), ttl: 60);
        Assert.Equal("lease", (await session.ReadAsync())?.Name);

        var last = await ReadToEndAsync(session);

        // exp is in whole seconds: up to one before the time asked for.
        Assert.InRange(DateTime.UtcNow, expires.AddSeconds(-1), expires.AddSeconds(2));
        Assert.Equal(CredentialEnded, last);
    }

    /// <summary>A poll of <paramref name="application"/> at its current version, parked on node A (wait 30 s).</summary>
    private async Task<Task<HttpResponseMessage>> ParkAsync(HttpClient holder, string application)
    {
        var subscription = Http.Subscription(Http.Entry(application));
        var (_, version, _) = await holder.SubscribeAsync(subscription);
        using var parked = MeterWatch.Node(cluster.NodeA, "registry.polls.parked");
        var poll = holder.PostJsonAsync($"/v1/subscribe?version={version}&wait=30", subscription);
        await parked.WaitForAsync(1);
        return poll;
    }

    /// <summary>Reads a session's stream until it ends (within 10 s): the last comment it carried.</summary>
    private static async Task<string> ReadToEndAsync(SessionReader session)
    {
        var reading = Stopwatch.StartNew();
        var last = "";
        while (await session.ReadAsync() is { } item)
        {
            Assert.True(reading.Elapsed < TimeSpan.FromSeconds(10), "the session is still open");
            Assert.Equal(":", item.Name);
            last = item.Data;
        }

        return last;
    }

    private async Task<string> AdminReadAsync(string path)
    {
        using var admin = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(AccessCluster.Bootstrap));
        return await admin.GetStringAsync(new Uri(path, UriKind.Relative));
    }

    [Fact]
    public async Task ReadinessDetailsAreForAdminOnlyAndProtectedMetricsNeedAdmin()
    {
        using var anonymous = cluster.NodeB.CreateClient();
        using var admin = AccessCluster.Client(cluster.NodeB, cluster.Credentials["admin"]);
        using var reader = AccessCluster.Client(cluster.NodeB, cluster.Credentials["subscribe-only"]);

        var open = await (await anonymous.GetAsync(new Uri("/readyz", UriKind.Relative))).ReadJsonAsync();
        var detailed = await (await admin.GetAsync(new Uri("/readyz", UriKind.Relative))).ReadJsonAsync();
        Assert.Equal("ready", (string?)open["status"]);
        Assert.Null(open["checks"]);
        Assert.NotNull(detailed["checks"]!["database"]);

        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync(new Uri("/metrics", UriKind.Relative))).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await reader.GetAsync(new Uri("/metrics", UriKind.Relative))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync(new Uri("/metrics", UriKind.Relative))).StatusCode);
    }

    [Fact]
    public async Task JwtsThatAreExpiredForAnotherAudienceOrWronglySignedAreUnauthorized()
    {
        Dictionary<string, object> claims = new() { ["sub"] = "ci", ["registry_subscribe"] = new JsonArray("*") };
        var good = cluster.Jwt(claims);
        var expired = cluster.Jwt(claims, expires: DateTime.UtcNow.AddMinutes(-5));
        var otherAudience = cluster.Jwt(claims, audience: "someone-else");
        var tampered = good[..^4] + (good[^4] == 'A' ? "BBBB" : "AAAA");

        foreach (var (name, jwt, expected) in new[]
        {
            ("good", good, HttpStatusCode.OK), ("expired", expired, HttpStatusCode.Unauthorized),
            ("other audience", otherAudience, HttpStatusCode.Unauthorized), ("tampered", tampered, HttpStatusCode.Unauthorized),
        })
        {
            using var client = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(jwt));
            using var response = await client.GetAsync(new Uri("/v1/services/payments", UriKind.Relative));
            Assert.True(expected == response.StatusCode, $"{name}: {response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        }
    }

    [Fact]
    public async Task AJwtWithTheAdminClaimManagesTokens()
    {
        using var client = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(cluster.Jwt(new() { ["sub"] = "ops", ["registry_admin"] = true })));

        using var response = await client.GetAsync(new Uri("/v1/tokens", UriKind.Relative));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task RepeatedFailedAuthenticationsFromOneAddressGetTooManyRequestsButValidCredentialsStillWork()
    {
        await using var node = cluster.Start(new() { ["Registry:Auth:MaxFailuresPerMinute"] = "3" });
        using var stranger = AccessCluster.Client(node, cluster.Credentials["unknown"]);
        using var admin = AccessCluster.Client(node, cluster.Credentials["admin"]);

        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 4; i++)
        {
            statuses.Add((await stranger.GetAsync(new Uri("/v1/services", UriKind.Relative))).StatusCode);
        }

        using var limited = await stranger.GetAsync(new Uri("/v1/services", UriKind.Relative));
        Assert.Equal([HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.TooManyRequests], statuses);
        Assert.Equal(HttpStatusCode.TooManyRequests, limited.StatusCode);
        Assert.True(limited.Headers.RetryAfter?.Delta > TimeSpan.Zero);
        Assert.Equal("application/problem+json", limited.Content.Headers.ContentType?.MediaType);
        Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync(new Uri("/v1/services", UriKind.Relative))).StatusCode);
    }

    [Fact]
    public async Task PastTheFailedAuthenticationLimitTheBootstrapTokenIsRefusedLikeAWrongGuess()
    {
        // The bootstrap token is the one secret an operator chooses: were a right guess answered while wrong ones get
        // 429, the limit would not slow guessing at all.
        await using var node = cluster.Start(new() { ["Registry:Auth:MaxFailuresPerMinute"] = "3" });
        using var stranger = AccessCluster.Client(node, cluster.Credentials["unknown"]);
        using var bootstrap = AccessCluster.Client(node, AccessCluster.Bearer(AccessCluster.Bootstrap));
        using var admin = AccessCluster.Client(node, cluster.Credentials["admin"]);
        Assert.Equal(HttpStatusCode.OK, (await bootstrap.GetAsync(new Uri("/v1/tokens", UriKind.Relative))).StatusCode);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await stranger.GetAsync(new Uri("/v1/tokens", UriKind.Relative))).StatusCode);
        }

        using var guessed = await bootstrap.GetAsync(new Uri("/v1/tokens", UriKind.Relative));
        using var ready = await bootstrap.GetAsync(new Uri("/readyz", UriKind.Relative));

        Assert.Equal(HttpStatusCode.TooManyRequests, guessed.StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, ready.StatusCode);
        // A registry token from the same address still works.
        Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync(new Uri("/v1/tokens", UriKind.Relative))).StatusCode);
    }

    /// <summary>
    /// Every node holds every token and reloads them all at each change: before, tokens made per deploy without an
    /// expiry piled up without bound. Creation now stops at Registry:Auth:MaxTokens, with a 409 saying what to do.
    /// </summary>
    [Fact]
    public async Task TokenCreationStopsAtTheConfiguredMostTokens()
    {
        await using var node = cluster.Start(new() { ["Registry:Auth:MaxTokens"] = "2" }, database: await cluster.CreateDatabaseAsync());
        using var admin = AccessCluster.Client(node, AccessCluster.Bearer(AccessCluster.Bootstrap));
        async Task<HttpResponseMessage> CreateAsync(int i) => await admin.PostJsonAsync("/v1/tokens", $$"""{"description":"deploy {{i}}","register":["payments"]}""");

        using var first = await CreateAsync(1);
        using var second = await CreateAsync(2);
        using var third = await CreateAsync(3);
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(HttpStatusCode.Created, second.StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, third.StatusCode);
        Assert.Equal("application/problem+json", third.Content.Headers.ContentType?.MediaType);
        Assert.Contains("Registry:Auth:MaxTokens", (string?)(await third.ReadJsonAsync())["detail"], StringComparison.Ordinal);
        using (var listed = await admin.GetAsync(new Uri("/v1/tokens", UriKind.Relative)))
        {
            Assert.Equal(2, (await listed.ReadJsonAsync())["tokens"]!.AsArray().Count);
        }

        using (var revoked = await admin.DeleteAsync(new Uri($"/v1/tokens/{(string)(await first.ReadJsonAsync())["id"]!}", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.NoContent, revoked.StatusCode);
        }

        using var fourth = await CreateAsync(4);
        Assert.Equal(HttpStatusCode.Created, fourth.StatusCode);
    }

    /// <summary>
    /// Application names may be made longer than the default 128 (Registry:Limits:MaxApplicationLength): a token may
    /// name them too (before, any pattern over 128 characters was 400, and a JWT claim naming one was dropped).
    /// </summary>
    [Fact]
    public async Task ATokenMayNameAnApplicationAsLongAsTheRegistryTakes()
    {
        await using var node = cluster.Start(new() { ["Registry:Limits:MaxApplicationLength"] = "200" }, database: await cluster.CreateDatabaseAsync());
        var application = new string('a', 150);

        var (_, secret) = await cluster.CreateTokenAsync($$"""{"description":"long names","register":["{{application}}"]}""", node);
        using var provider = AccessCluster.Client(node, AccessCluster.Bearer(secret));
        using var registered = await provider.PostJsonAsync("/v1/register", Http.Provider(application, "10.0.0.1:80"));

        Assert.Equal(HttpStatusCode.Created, registered.StatusCode);
    }

    /// <summary>
    /// With per-client rate limiting on, wrong guesses past the address's bucket are turned away before the challenge
    /// that counted failures: before, they were never counted, and the right bootstrap token (its own bucket) passed
    /// among them, so the limit no longer slowed guessing. Failures are now counted as they fail.
    /// </summary>
    [Fact]
    public async Task GuessesTurnedAwayByTheRateLimiterStillCountAsFailedAuthentications()
    {
        await using var node = cluster.Start(new()
        {
            ["Registry:Auth:MaxFailuresPerMinute"] = "3",
            ["Registry:RateLimit:PermitsPerSecond"] = "1",
            ["Registry:RateLimit:Burst"] = "1",
        });
        using var stranger = AccessCluster.Client(node, cluster.Credentials["unknown"]);
        using var bootstrap = AccessCluster.Client(node, AccessCluster.Bearer(AccessCluster.Bootstrap));
        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 6; i++)
        {
            statuses.Add((await stranger.GetAsync(new Uri("/v1/tokens", UriKind.Relative))).StatusCode);
        }

        using var guessed = await bootstrap.GetAsync(new Uri("/v1/tokens", UriKind.Relative));

        Assert.All(statuses.Skip(1), s => Assert.Equal(HttpStatusCode.TooManyRequests, s));
        Assert.Equal(HttpStatusCode.TooManyRequests, guessed.StatusCode);
    }

    /// <summary>
    /// A stale token sent where nothing answers 401 (an uptime check of /healthz) is refused nowhere, and spends none
    /// of its address's failures: the bootstrap token from that host still passes.
    /// </summary>
    [Fact]
    public async Task AStaleTokenSentWhereNothingAnswers401SpendsNoFailures()
    {
        await using var node = cluster.Start(new() { ["Registry:Auth:MaxFailuresPerMinute"] = "3" });
        using var stranger = AccessCluster.Client(node, cluster.Credentials["unknown"]);
        using var bootstrap = AccessCluster.Client(node, AccessCluster.Bearer(AccessCluster.Bootstrap));
        for (var i = 0; i < 5; i++)
        {
            using var health = await stranger.GetAsync(new Uri("/healthz", UriKind.Relative));
            Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        }

        using var tokens = await bootstrap.GetAsync(new Uri("/v1/tokens", UriKind.Relative));
        Assert.Equal(HttpStatusCode.OK, tokens.StatusCode);
    }

    [Fact]
    public async Task FailedAuthenticationsFromOneIpv6NetworkAreCountedTogether()
    {
        await using var node = cluster.Start(new()
        {
            ["Registry:Auth:MaxFailuresPerMinute"] = "3",
            // The test is the proxy: it names the client address of each request.
            ["Registry:Network:TrustedProxies:0"] = "127.0.0.1",
        });
        node.UseKestrel(0);
        node.StartServer();
        using var stranger = AccessCluster.Client(node, cluster.Credentials["unknown"]);

        // A host with a /64 to itself, guessing from a new address each time.
        var statuses = new List<HttpStatusCode>();
        for (var i = 1; i <= 4; i++)
        {
            using var response = await GetForAsync(stranger, $"2001:db8:1:2::{i:x}");
            statuses.Add(response.StatusCode);
        }

        using var neighbour = await GetForAsync(stranger, "2001:db8:1:3::1");
        Assert.Equal([HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.TooManyRequests], statuses);
        Assert.Equal(HttpStatusCode.Unauthorized, neighbour.StatusCode);

        static async Task<HttpResponseMessage> GetForAsync(HttpClient client, string address)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services");
            request.Headers.Add("X-Forwarded-For", address);
            return await client.SendAsync(request);
        }
    }

    [Fact]
    public async Task GuessingTokensAtTheReadinessCheckIsLimitedLikeAnyFailedAuthentication()
    {
        await using var node = cluster.Start(new() { ["Registry:Auth:MaxFailuresPerMinute"] = "3" });
        using var stranger = AccessCluster.Client(node, cluster.Credentials["unknown"]);
        using var admin = AccessCluster.Client(node, cluster.Credentials["admin"]);
        using var probe = AccessCluster.Client(node, null);

        var statuses = new List<HttpStatusCode>();
        HttpResponseMessage? last = null;
        for (var i = 0; i < 4; i++)
        {
            last?.Dispose();
            last = await stranger.GetAsync(new Uri("/readyz", UriKind.Relative));
            statuses.Add(last.StatusCode);
        }

        using var limited = last!;
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests], statuses);
        Assert.True(limited.Headers.RetryAfter?.Delta > TimeSpan.Zero);
        Assert.Equal("application/problem+json", limited.Content.Headers.ContentType?.MediaType);
        // The limit is on guesses: an orchestrator's probe without a credential, and a valid credential, still pass.
        Assert.Equal(HttpStatusCode.OK, (await probe.GetAsync(new Uri("/readyz", UriKind.Relative))).StatusCode);
        Assert.NotNull((await (await admin.GetAsync(new Uri("/readyz", UriKind.Relative))).ReadJsonAsync())["checks"]);
    }

    [Fact]
    public async Task TokenAndNodeCallsThroughANodeCutOffFromTheDatabaseAre503WithRetryAfter()
    {
        await using var proxy = new TcpProxy(cluster.ConnectionString);
        await using var node = cluster.Start(new() { ["ConnectionStrings:Registry"] = proxy.ConnectionString });
        using var admin = AccessCluster.Client(node, AccessCluster.Bearer(AccessCluster.Bootstrap));
        var (id, _) = await cluster.CreateTokenAsync("""{"description":"outlives the outage"}""");
        using (var listed = await admin.GetAsync(new Uri("/v1/tokens", UriKind.Relative)))
        {
            Assert.Equal(HttpStatusCode.OK, listed.StatusCode);
        }

        await proxy.CutAsync();

        foreach (var (method, path, body) in new (HttpMethod, string, string?)[]
        {
            (HttpMethod.Post, "/v1/tokens", """{"description":"made during the outage"}"""),
            (HttpMethod.Get, "/v1/tokens", null),
            (HttpMethod.Delete, $"/v1/tokens/{id}", null),
            (HttpMethod.Get, "/v1/nodes", null),
        })
        {
            using var request = new HttpRequestMessage(method, path) { Content = body is null ? null : Http.Json(body) };
            using var response = await admin.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True(response.StatusCode == HttpStatusCode.ServiceUnavailable, $"{method} {path}: {(int)response.StatusCode} {text}");
            Assert.True(response.Headers.RetryAfter?.Delta > TimeSpan.Zero, $"{method} {path}: no Retry-After");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
    }

    [Fact]
    public async Task ATokenRevokedWhileANodesChangeFeedIsDownIsRefusedThereAndOneTheDatabaseCannotConfirmStands()
    {
        var database = await cluster.CreateDatabaseAsync();
        await using var node = cluster.Start([], database: database);
        var (revokedId, revoked) = await cluster.CreateTokenAsync("""{"description":"revoked on another node","subscribe":["*"],"admin":true}""", node);
        var (_, kept) = await cluster.CreateTokenAsync("""{"description":"kept","subscribe":["*"]}""", node);
        var (_, unconfirmed) = await cluster.CreateTokenAsync("""{"description":"asked while the database cannot answer","subscribe":["*"]}""", node);
        using var revokedClient = AccessCluster.Client(node, AccessCluster.Bearer(revoked));
        using var keptClient = AccessCluster.Client(node, AccessCluster.Bearer(kept));
        using var unconfirmedClient = AccessCluster.Client(node, AccessCluster.Bearer(unconfirmed));
        var services = new Uri("/v1/services", UriKind.Relative);
        Assert.Equal(HttpStatusCode.OK, (await revokedClient.GetAsync(services)).StatusCode);

        // The feed is cut, and its reconnection waits at the full load (its tokens already reloaded): whatever is
        // announced meanwhile waits too.
        await using var held = await HeldFeed.CutAsync(database);
        await using (var revoke = new NpgsqlConnection(database))
        {
            // As another node's DELETE /v1/tokens/{id} does.
            await revoke.OpenAsync();
            await using var delete = new NpgsqlCommand("DELETE FROM tokens WHERE id = @id; SELECT pg_notify('registry_tokens', @id)", revoke);
            delete.Parameters.AddWithValue("id", revokedId);
            await delete.ExecuteNonQueryAsync();
        }

        using (var read = await revokedClient.GetAsync(services))
        using (var minted = await revokedClient.PostJsonAsync("/v1/tokens", """{"description":"minted with a revoked token","admin":true}"""))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, read.StatusCode);
            Assert.Equal(HttpStatusCode.Unauthorized, minted.StatusCode);
        }

        Assert.Equal(HttpStatusCode.OK, (await keptClient.GetAsync(services)).StatusCode);

        // Nor can the database answer now: a token the cache holds still serves what the node has in memory.
        await using (var lockTokens = new NpgsqlCommand("LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE", held.Connection, held.Transaction))
        {
            await lockTokens.ExecuteNonQueryAsync();
        }

        Assert.Equal(HttpStatusCode.OK, (await unconfirmedClient.GetAsync(services)).StatusCode);
        await held.ReleaseAsync();
    }

    /// <summary>
    /// A probe outlives the request that asks for it and ends with its registry token (revoked or expired). Before, one
    /// asked for with a JWT was kept by passing probes long after the JWT expired: nothing followed its expiry.
    /// </summary>
    [Fact]
    public async Task ProbingIsRefusedToAJwtWhoseExpiryNothingWouldFollow()
    {
        await using var node = cluster.Start(new() { ["Registry:Probes:AllowedNetworks:0"] = "127.0.0.0/8" }, database: await cluster.CreateDatabaseAsync());
        var (_, token) = await cluster.CreateTokenAsync("""{"description":"db deploys","register":["db"]}""", node);
        var jwt = cluster.Jwt(new() { ["sub"] = "system:serviceaccount:db:api", ["registry_register"] = new JsonArray("db") });
        const string Probed = "/v1/register?probe=tcp&probeInterval=5";
        var provider = Http.Provider("db", "127.0.0.1:5432", protocol: "tcp");

        using (var client = AccessCluster.Client(node, AccessCluster.Bearer(jwt)))
        using (var refused = await client.PostJsonAsync(Probed, provider))
        using (var heartbeatKind = await client.PostJsonAsync("/v1/register", provider))
        {
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains("registry token", (string)(await refused.ReadJsonAsync())["detail"]!, StringComparison.Ordinal);
            Assert.Equal(HttpStatusCode.Created, heartbeatKind.StatusCode);
        }

        using (var client = AccessCluster.Client(node, AccessCluster.Bearer(token)))
        using (var probed = await client.PostJsonAsync(Probed, provider))
        {
            Assert.Equal(HttpStatusCode.OK, probed.StatusCode);
        }
    }

    [Fact]
    public async Task ATokenWhoseCreationCommittedIsAnsweredWithItsSecretEvenIfTheNodeCannotReloadItsTokens()
    {
        // In the INSERT's own transaction a trigger puts a view in front of the tokens table, in the
        // schema named after the user (first on the search path), that fails whenever it is read:
        // the creation commits, and the node's reload right after it fails.
        await using var connection = new NpgsqlConnection(cluster.ConnectionString);
        await connection.OpenAsync();
        await using (var schemas = new NpgsqlCommand("SELECT count(*) FROM pg_namespace WHERE nspname = current_user", connection))
        {
            Assert.Equal(0L, await schemas.ExecuteScalarAsync()); // the cleanup below drops it
        }

        await ExecuteAsync(connection, """
            CREATE FUNCTION test_tokens_unreadable() RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'the tokens cannot be read (test)'; END $$;
            CREATE FUNCTION test_hide_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              EXECUTE format('CREATE SCHEMA %I', current_user);
              EXECUTE format('CREATE VIEW %I.tokens AS SELECT * FROM public.tokens WHERE test_tokens_unreadable()', current_user);
              RETURN NULL;
            END $$;
            CREATE TRIGGER test_hide_tokens AFTER INSERT ON tokens FOR EACH STATEMENT EXECUTE FUNCTION test_hide_tokens();
            """);
        using var admin = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(AccessCluster.Bootstrap));
        HttpResponseMessage created;
        try
        {
            created = await admin.PostJsonAsync("/v1/tokens", """{"description":"created as the reload fails","subscribe":["payments"]}""");
        }
        finally
        {
            await ExecuteAsync(connection, """
                DO $$ BEGIN EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', current_user); END $$;
                DROP TRIGGER test_hide_tokens ON tokens;
                DROP FUNCTION test_hide_tokens();
                DROP FUNCTION test_tokens_unreadable();
                """);
        }

        using (created)
        {
            var body = await created.ReadJsonAsync();
            Assert.True(created.StatusCode == HttpStatusCode.Created, body.ToJsonString());
            var secret = (string)body["token"]!;
            cluster.Secrets.Add(secret);
            Assert.Contains(cluster.Logs.Entries, e => e.Category == "Registry.Access.TokenApi" && e.Message.Contains((string)body["id"]!, StringComparison.Ordinal));

            // The notification reloads the node once the tokens can be read again.
            using var client = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(secret));
            Assert.True(await WaitForStatusAsync(client, HttpStatusCode.OK, TimeSpan.FromSeconds(5)), "the token created during the failed reload is not accepted afterwards");
        }
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    [Fact]
    public async Task LastUsedReachesTheDatabaseAndTheListingButTheSecretNever()
    {
        var (id, secret) = await cluster.CreateTokenAsync("""{"description":"busy consumer","subscribe":["payments"]}""");
        using var client = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(secret));
        await using var connection = new NpgsqlConnection(cluster.ConnectionString);
        await connection.OpenAsync();

        for (var i = 0; i < 50; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await client.GetAsync(new Uri("/v1/services/payments", UriKind.Relative))).StatusCode);
        }

        // The node writes what it noted every 200 ms here (one statement for all tokens).
        DateTime? lastUsed = null;
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (lastUsed is null && DateTime.UtcNow < deadline)
        {
            await using var read = new NpgsqlCommand("SELECT last_used_at FROM tokens WHERE id = @id", connection);
            read.Parameters.AddWithValue("id", id);
            lastUsed = await read.ExecuteScalarAsync() as DateTime?;
            await Task.Delay(50);
        }

        Assert.NotNull(lastUsed);
        Assert.True(lastUsed > DateTime.UtcNow.AddMinutes(-1), $"{lastUsed}");
        using var admin = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(AccessCluster.Bootstrap));
        var listed = (await (await admin.GetAsync(new Uri("/v1/tokens", UriKind.Relative))).ReadJsonAsync())["tokens"]!.AsArray()
            .Single(t => (string?)t!["id"] == id)!;
        Assert.NotNull(listed["lastUsed"]);
        Assert.Null(listed["token"]);
        Assert.DoesNotContain(secret, listed.ToJsonString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task TokensExpiredLongerThanConfiguredAreDeletedAndAudited()
    {
        // Tokens made per deploy with an expiry: each would stay in every node's cache and in
        // every reload for ever.
        var (gone, _) = await cluster.CreateTokenAsync("""{"description":"deploy 41","register":["payments"]}""");
        var (kept, _) = await cluster.CreateTokenAsync("""{"description":"deploy 42","register":["payments"]}""");
        var logs = new CapturedLogs();
        // A node forgetting after a day (the cluster's other tokens expired within this test run).
        await using var forgetting = cluster.Start(new() { ["Registry:Auth:ForgetExpiredAfter"] = "1.00:00:00", ["Logging:LogLevel:Registry.Audit"] = "Information" }, logs);
        using var forgotten = MeterWatch.Node(forgetting, "registry.audit.events", "action", "token_forget");
        await using var announcements = await NotificationListener.StartAsync(cluster.ConnectionString, "registry_tokens");
        await using (var connection = new NpgsqlConnection(cluster.ConnectionString))
        {
            await connection.OpenAsync();
            await using var expire = new NpgsqlCommand(
                """
                UPDATE tokens SET expires_at = now() - CASE WHEN id = @gone THEN interval '2 days' ELSE interval '1 minute' END WHERE id IN (@gone, @kept);
                SELECT pg_notify('registry_tokens', 'test');
                """, connection);
            expire.Parameters.AddWithValue("gone", gone);
            expire.Parameters.AddWithValue("kept", kept);
            await expire.ExecuteNonQueryAsync();
        }

        await forgotten.WaitForAsync(1);
        // Announced, so every node's cache lets it go.
        await announcements.WaitForAsync("expired");
        using var admin = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(AccessCluster.Bootstrap));
        var listed = (await (await admin.GetAsync(new Uri("/v1/tokens", UriKind.Relative))).ReadJsonAsync())["tokens"]!.AsArray()
            .Select(t => (string)t!["id"]!).ToList();
        Assert.DoesNotContain(gone, listed);
        Assert.Contains(kept, listed);
        Assert.Contains(logs.Entries, e => e.Category == "Registry.Audit" && e.Message.StartsWith($"token {gone} forgotten (expired at ", StringComparison.Ordinal));
        Assert.Equal(1, forgotten.Total);
    }

    [Fact]
    public async Task ATokenExpiringAtTheLatestTimeThereIsDoesNotStopTheDeletionOfExpiredOnes()
    {
        // 9999-12-31T23:59:59.9999999Z is stored as infinity; when it is the only expiry left,
        // the time until the next deletion is infinite, which PostgreSQL refuses to compute.
        var database = await cluster.CreateDatabaseAsync();
        await using var node = cluster.Start(new() { ["Registry:Auth:ForgetExpiredAfter"] = "1.00:00:00" }, database: database);
        using var forgotten = MeterWatch.Node(node, "registry.audit.events", "action", "token_forget");
        var (gone, _) = await cluster.CreateTokenAsync("""{"description":"deploy 41","register":["payments"]}""", node);
        var (lasting, _) = await cluster.CreateTokenAsync("""{"description":"for ever","subscribe":["payments"],"expires":"9999-12-31T23:59:59.9999999Z"}""", node);
        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            await using var expire = new NpgsqlCommand(
                "UPDATE tokens SET expires_at = now() - interval '2 days' WHERE id = @gone; SELECT pg_notify('registry_tokens', 'test')", connection);
            expire.Parameters.AddWithValue("gone", gone);
            await expire.ExecuteNonQueryAsync();
        }

        await forgotten.WaitForAsync(1);

        using var admin = AccessCluster.Client(node, AccessCluster.Bearer(AccessCluster.Bootstrap));
        var listed = (await (await admin.GetAsync(new Uri("/v1/tokens", UriKind.Relative))).ReadJsonAsync())["tokens"]!.AsArray()
            .Select(t => (string)t!["id"]!).ToList();
        Assert.Equal([lasting], listed);
    }

    [Fact]
    public async Task ALastUsedFlushWaitingForATokenRowHoldsNoRowOrderedAfterIt()
    {
        // Two nodes flush last-used times for the same tokens; each must lock them in one order
        // (the ids'), or each holds a row the other waits for: a deadlock, and a flush lost.
        var tokens = new List<(string Id, string Secret)>();
        for (var i = 0; i < 20; i++)
        {
            tokens.Add(await cluster.CreateTokenAsync($$"""{"description":"lock order {{i}}","subscribe":["payments"]}"""));
        }

        await using var connection = new NpgsqlConnection(cluster.ConnectionString);
        await connection.OpenAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        var ids = new List<string>();
        await using (var order = new NpgsqlCommand("SELECT id FROM tokens WHERE id = ANY(@ids) ORDER BY id COLLATE \"default\"", connection, transaction))
        {
            order.Parameters.AddWithValue("ids", tokens.Select(t => t.Id).ToArray());
            await using var reader = await order.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                ids.Add(reader.GetString(0));
            }
        }

        // The first token of the order is held (as another node's flush would hold it)…
        await LockTokenAsync(connection, transaction, ids[0], nowait: false);
        await Task.WhenAll(tokens.Select(async token =>
        {
            using var client = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(token.Secret));
            using var response = await client.GetAsync(new Uri("/v1/services/payments", UriKind.Relative));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }));

        // …when all of them are used: the node's flush waits for it…
        await using (var clear = new NpgsqlCommand("SELECT pg_stat_clear_snapshot()", connection, transaction))
        await using (var blocked = new NpgsqlCommand(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
            connection, transaction))
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
            do
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), deadline.Token);
                await clear.ExecuteNonQueryAsync();
            }
            while ((long)(await blocked.ExecuteScalarAsync())! == 0);
        }

        // …having taken none of the rows after it.
        foreach (var id in ids.Skip(1))
        {
            await LockTokenAsync(connection, transaction, id, nowait: true);
        }

        await transaction.CommitAsync();
    }

    private static async Task LockTokenAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string id, bool nowait)
    {
        await using var command = new NpgsqlCommand($"SELECT 1 FROM tokens WHERE id = @id FOR NO KEY UPDATE{(nowait ? " NOWAIT" : "")}", connection, transaction);
        command.Parameters.AddWithValue("id", id);
        Assert.Equal(1, await command.ExecuteScalarAsync());
    }

    [Fact]
    public async Task TokenRequestsAreValidatedFieldByField()
    {
        using var admin = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(AccessCluster.Bootstrap));
        foreach (var (body, field) in new[]
        {
            ("""{"register":["payments"]}""", "description"),
            ("""{"description":"x","register":["pay*ments"]}""", "register"),
            ("""{"description":"x","subscribe":"payments"}""", "subscribe"),
            ("""{"description":"x","admin":"yes"}""", "admin"),
            ("""{"description":"x","expires":"2020-01-01T00:00:00Z"}""", "expires"),
            ("""{"description":"x","expires":"tomorrow"}""", "expires"),
            ("""{"description":"x","colour":"blue"}""", "colour"),
            // Read by one tool as a plain token and by another as an admin one.
            ("""{"description":"x","admin":false,"admin":true}""", "admin"),
            ($$"""{"description":"{{new string('d', 257)}}"}""", "description"),
            ($$"""{"description":"x","subscribe":[{{string.Join(",", Enumerable.Range(0, 65).Select(i => $"\"app{i}\""))}}]}""", "subscribe"),
            ("""{"description":null}""", "description"),
            ("""[1,2]""", "$"),
            ("""{"description":""", "$"),
            // Lone surrogates: JSON the parser takes, text no string can hold.
            ("""{"description":"\ud800"}""", "description"),
            ("""{"\ud800":1}""", "$"),
            ("""{"description":"x","register":["\ud800"]}""", "register"),
            ("""{"description":"x","subscribe":["payments","\udfff"]}""", "subscribe"),
            ("""{"description":"x","expires":"\ud800"}""", "expires"),
        })
        {
            using var response = await admin.PostJsonAsync("/v1/tokens", body);
            await AssertNamesFieldAsync(response, body, field);
        }

        // The description's length is counted in characters, not UTF-16 units: 256 emoji fit.
        using (var emoji = await admin.PostJsonAsync("/v1/tokens", $$"""{"description":"{{string.Concat(Enumerable.Repeat("\ud83d\ude80", 256))}}"}"""))
        {
            Assert.Equal(HttpStatusCode.Created, emoji.StatusCode);
        }

        // Bytes that are not UTF-8, in a value and in a member name.
        foreach (var (before, after, field) in new[] { ("{\"description\":\"", "\"}", "description"), ("{\"", "\":1}", "$") })
        {
            byte[] body = [.. System.Text.Encoding.UTF8.GetBytes(before), 0xFF, .. System.Text.Encoding.UTF8.GetBytes(after)];
            using var content = new ByteArrayContent(body);
            content.Headers.ContentType = new("application/json");
            using var response = await admin.PostAsync(new Uri("/v1/tokens", UriKind.Relative), content);
            await AssertNamesFieldAsync(response, $"{before}<FF>{after}", field);
        }
    }

    [Fact]
    public async Task RevokingAnIdNoTokenCouldHaveIsNotFound()
    {
        using var admin = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(AccessCluster.Bootstrap));
        // Longer than a notification may carry: before, the failing statement was answered as the database being down.
        foreach (var id in new[] { new string('a', 8050), "tok_" + new string('a', 8046), "tok_short", "tok_AAAAAAAAAAAAAAA%21" })
        {
            using var response = await admin.DeleteAsync(new Uri($"/v1/tokens/{id}", UriKind.Relative));
            Assert.True(response.StatusCode == HttpStatusCode.NotFound, $"{id[..Math.Min(20, id.Length)]}…: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
    }

    private static async Task AssertNamesFieldAsync(HttpResponseMessage response, string body, string field)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{body}: {(int)response.StatusCode} {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.True(JsonNode.Parse(text)?["errors"]?[field] is not null, $"{body}: {text}");
    }

    [Fact]
    public async Task ChangesAreAuditedWithTheCredentialIdAndNoSecretReachesTheLogs()
    {
        var (id, secret) = await cluster.CreateTokenAsync("""{"description":"audited deploys","register":["payments"]}""");
        using var client = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(secret));
        using var audited = MeterWatch.Node(cluster.NodeA, "registry.audit.events", "action", "register");

        Assert.True((await client.PostJsonAsync("/v1/register", Http.Provider("payments", "10.9.9.9:80"))).IsSuccessStatusCode);
        Assert.Equal(HttpStatusCode.NoContent, (await client.PostJsonAsync("/v1/unregister", Http.Provider("payments", "10.9.9.9:80"))).StatusCode);
        using (var stranger = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(secret + "x")))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await stranger.GetAsync(new Uri("/v1/services", UriKind.Relative))).StatusCode);
        }

        var audit = cluster.Logs.Entries.Where(e => e.Category == "Registry.Audit").Select(e => e.Message).ToList();
        Assert.Contains(audit, line => line.StartsWith("register payments http 10.9.9.9:80", StringComparison.Ordinal) && line.EndsWith($"by {id}", StringComparison.Ordinal));
        Assert.Contains(audit, line => line == $"unregister payments http 10.9.9.9:80 by {id}");
        Assert.Contains(audit, line => line.StartsWith($"token {id} created", StringComparison.Ordinal) && line.EndsWith("by bootstrap", StringComparison.Ordinal));
        Assert.Equal(1, audited.Total);
        var everything = cluster.Logs.Text;
        Assert.NotEmpty(everything);
        foreach (var leaked in cluster.Secrets.Where(s => everything.Contains(s, StringComparison.Ordinal)))
        {
            Assert.Fail($"a secret reached the logs: {leaked[..8]}…");
        }
    }

    private static async Task<bool> WaitForStatusAsync(HttpClient client, HttpStatusCode expected, TimeSpan within)
    {
        var began = Stopwatch.StartNew();
        while (began.Elapsed < within)
        {
            using var response = await client.GetAsync(new Uri("/v1/services", UriKind.Relative));
            if (response.StatusCode == expected)
            {
                return true;
            }

            await Task.Delay(10);
        }

        return false;
    }
}
