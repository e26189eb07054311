using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>Bad input is a 4xx problem document naming the field and the reason: never a 5xx, never a hang.</summary>
public sealed class BadInputTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private const string Good = """{"application":"app","protocol":"http","addr":"10.0.0.1:80"}""";

    public static TheoryData<string, string, string> BadProviders => new()
    {
        { "/v1/register", "{", "$" },
        { "/v1/register", "", "$" },
        { "/v1/register", "[]", "$" },
        { "/v1/register", "null", "$" },
        { "/v1/register", """{"protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", """{"application":"","protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", """{"application":null,"protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", """{"application":42,"protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", """{"application":"-app","protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", """{"application":"a b","protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", $$"""{"application":"{{new string('a', 129)}}","protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", """{"application":"app","protocol":"HTTP","addr":"10.0.0.1:80"}""", "protocol" },
        { "/v1/register", """{"application":"app","addr":"10.0.0.1:80"}""", "protocol" },
        { "/v1/register", """{"application":"app","protocol":"http"}""", "addr" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1"}""", "addr" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:0"}""", "addr" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:65536"}""", "addr" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.256:80"}""", "addr" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"::1:80"}""", "addr" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"[zz]:80"}""", "addr" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"host name:80"}""", "addr" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":[]}""", "meta" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":null}""", "meta" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":{"k":1}}""", "meta.k" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":{"k":null}}""", "meta.k" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":{"k":{"x":"y"}}}""", "meta.k" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":{"":"v"}}""", "meta." },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":{"a b":"v"}}""", "meta.a b" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":{"k":"a\u0001b"}}""", "meta.k" },
        { "/v1/register", $$$"""{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":{"k":"{{{new string('v', 513)}}}"}}""", "meta.k" },
        { "/v1/register", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","extra":"x"}""", "extra" },
        { "/v1/register", """{"application":"app","application":"app","protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", """{"application":"app\ud800","protocol":"http","addr":"10.0.0.1:80"}""", "application" },
        { "/v1/register", """{"\ud800":1}""", "$" },
        { "/v1/register?ttl=0", Good, "ttl" },
        { "/v1/register?ttl=-5", Good, "ttl" },
        { "/v1/register?ttl=abc", Good, "ttl" },
        { "/v1/register?ttl=1.5", Good, "ttl" },
        // Given twice, a parameter would be bound as both values joined by a comma: a probe of "/a,/b".
        { "/v1/register?probe=http&probePath=/a&probePath=/b", Good, "probePath" },
        { "/v1/register?ttl=10&TTL=20", Good, "ttl" },
        { "/v1/unregister?drain=5&drain=5", Good, "drain" },
        { "/v1/heartbeat", """{"application":"app","protocol":"http"}""", "addr" },
        { "/v1/unregister", """{"application":"app","addr":"10.0.0.1:80"}""", "protocol" },
    };

    public static TheoryData<string, string, string> BadSubscriptions => new()
    {
        { "/v1/subscribe", "{}", "subscribes" },
        { "/v1/subscribe", """{"subscribes":[]}""", "subscribes" },
        { "/v1/subscribe", """{"subscribes":null}""", "subscribes" },
        { "/v1/subscribe", """{"subscribes":{}}""", "subscribes" },
        { "/v1/subscribe", """{"subscribes":[{}]}""", "subscribes[0].provider" },
        { "/v1/subscribe", """{"subscribes":[{"provider":"a"},{"provider":""}]}""", "subscribes[1].provider" },
        { "/v1/subscribe", """{"subscribes":[{"provider":"a","protocol":null}]}""", "subscribes[0].protocol" },
        { "/v1/subscribe", """{"subscribes":[{"provider":"a","meta":{"k":2}}]}""", "subscribes[0].meta.k" },
        { "/v1/subscribe", """{"subscribes":[{"provider":"a","extra":1}]}""", "subscribes[0].extra" },
        { "/v1/subscribe", """{"subscribes":[1]}""", "subscribes[0]" },
        { "/v1/subscribe", """{"subscribes":[{"provider":"a"}],"more":true}""", "more" },
        { "/v1/subscribe?wait=-1", """{"subscribes":[{"provider":"a"}]}""", "wait" },
        { "/v1/subscribe?wait=soon", """{"subscribes":[{"provider":"a"}]}""", "wait" },
        { "/v1/subscribe?version=" + new string('v', 129), """{"subscribes":[{"provider":"a"}]}""", "version" },
        // "V,V" would never be current: every poll answered at once, a client looping hot.
        { "/v1/subscribe?version=V&version=V", """{"subscribes":[{"provider":"a"}]}""", "version" },
    };

    [Theory]
    [MemberData(nameof(BadProviders))]
    [MemberData(nameof(BadSubscriptions))]
    public async Task BadInputIsABadRequestNamingTheField(string path, string body, string field)
    {
        using var response = await Client.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"))
            .WaitAsync(TimeSpan.FromSeconds(10));

        await AssertProblemAsync(response, HttpStatusCode.BadRequest, field);
    }

    /// <summary>One 400 names every field wrong: the probe's parameters too (before, they were read only once the rest passed).</summary>
    [Fact]
    public async Task ARegistrationNamesItsBadProbeParametersBesideTheRestInOneAnswer()
    {
        using var response = await Client.PostJsonAsync("/v1/register?ttl=0&probe=ftp", """{"application":"","protocol":"http","addr":"10.0.0.1:80"}""");

        await AssertProblemAsync(response, HttpStatusCode.BadRequest, "probe");
        var errors = (await response.ReadJsonAsync())["errors"]!.AsObject();
        Assert.Equal(["application", "probe", "ttl"], errors.Select(e => e.Key).Order(StringComparer.Ordinal));
    }

    /// <summary>A malformed <c>version</c> is a 400 with If-None-Match too (which wins when both are good); before, it was not looked at.</summary>
    [Fact]
    public async Task AMalformedVersionIsABadRequestBesideIfNoneMatch()
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services/a?version=" + new string('v', 129));
        request.Headers.TryAddWithoutValidation("If-None-Match", "\"x\"");

        using var response = await Client.SendAsync(request).WaitAsync(TimeSpan.FromSeconds(10));

        await AssertProblemAsync(response, HttpStatusCode.BadRequest, "version");
    }

    public static TheoryData<string, byte[], string> NotUtf8 => new()
    {
        { "/v1/subscribe", [.. "{\"subscribes\":[{\"provider\":\"a\",\"meta\":{\""u8, 0xff, .. "\":\"x\"}}]}"u8], "subscribes[0].meta" },
        { "/v1/register", [.. Encoding.UTF8.GetBytes(Good[..^1] + ",\"meta\":{\""), 0xff, .. "\":\"x\"}}"u8], "meta" },
        { "/v1/register", [.. Encoding.UTF8.GetBytes(Good[..^1] + ",\"meta\":{\"k\":\""), 0xc3, .. "\"}}"u8], "meta.k" },
    };

    [Theory]
    [MemberData(nameof(NotUtf8))]
    public async Task BytesThatAreNotUtf8AreABadRequestNamingTheField(string path, byte[] body, string field)
    {
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new("application/json");

        using var response = await Client.PostAsync(path, content).WaitAsync(TimeSpan.FromSeconds(10));

        await AssertProblemAsync(response, HttpStatusCode.BadRequest, field);
    }

    [Fact]
    public async Task TooManyMetaPairsIsABadRequest()
    {
        var meta = "{" + string.Join(",", Enumerable.Range(0, 65).Select(i => $"\"k{i}\":\"v\"")) + "}";

        using var response = await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80", meta));

        await AssertProblemAsync(response, HttpStatusCode.BadRequest, "meta");
    }

    [Fact]
    public async Task TooManySubscriptionEntriesIsABadRequest()
    {
        var entries = Enumerable.Range(0, 65).Select(i => Http.Entry($"app{i}")).ToArray();

        using var response = await Client.PostJsonAsync("/v1/subscribe", Http.Subscription(entries));

        await AssertProblemAsync(response, HttpStatusCode.BadRequest, "subscribes");
    }

    /// <summary>
    /// Every change to an application matches each meta pair of each subscription on it against each of its instances,
    /// on the one loop that applies changes. Before, a subscription could select on 64 entries of 64 pairs each.
    /// </summary>
    [Fact]
    public async Task ASubscriptionSelectingOnMoreMetaPairsInAllThanAllowedIsABadRequest()
    {
        static string Subscription(int entries) => Http.Subscription([.. Enumerable.Range(0, entries).Select(e =>
            Http.Entry("app", meta: "{" + string.Join(",", Enumerable.Range(0, 64).Select(i => $"\"k{i}\":\"v{e}\"")) + "}"))]);

        using (var allowed = await Client.PostJsonAsync("/v1/subscribe", Subscription(4)))
        {
            Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        }

        using var response = await Client.PostJsonAsync("/v1/subscribe", Subscription(5));

        await AssertProblemAsync(response, HttpStatusCode.BadRequest, "subscribes");
    }

    [Fact]
    public async Task AnOversizedBodyIsPayloadTooLarge()
    {
        var meta = "{\"k\":\"" + new string('v', 70 * 1024) + "\"}";

        using var declared = await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80", meta));
        using var chunked = new StringContent(Http.Provider("app", "10.0.0.1:80", meta), Encoding.UTF8, "application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/subscribe") { Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(meta))) };
        using var streamed = await Client.SendAsync(request);

        await AssertProblemAsync(declared, HttpStatusCode.RequestEntityTooLarge, null);
        await AssertProblemAsync(streamed, HttpStatusCode.RequestEntityTooLarge, null);
    }

    [Theory]
    [InlineData("/v1/services/-bad")]
    [InlineData("/v1/services/app?protocol=HTTP")]
    [InlineData("/v1/services/app?wait=-3")]
    [InlineData("/v1/services/app?meta.=x")]
    [InlineData("/v1/services/app?meta.idc=sh&meta.idc=bj")]
    [InlineData("/v1/services/app?protocol=http&protocol=grpc")]
    // Not silently unfiltered.
    [InlineData("/v1/services/app?Meta.idc=sh")]
    public async Task BadQueriesOnTheServiceGetAreBadRequests(string path)
    {
        using var response = await Client.GetAsync(path);

        await AssertProblemAsync(response, HttpStatusCode.BadRequest, null);
    }

    [Fact]
    public async Task UnknownRoutesAndMethodsAreProblemDocuments()
    {
        using var missing = await Client.GetAsync("/v1/nothing");
        using var wrongMethod = await Client.GetAsync("/v1/register");

        await AssertProblemAsync(missing, HttpStatusCode.NotFound, null);
        await AssertProblemAsync(wrongMethod, HttpStatusCode.MethodNotAllowed, null);
    }

    /// <summary>
    /// HEAD answers as GET does, without the body (RFC 9110 §9.3.2): a cheap "has it changed?" with the ETag, as on
    /// the health and metrics routes. Before, the API's GET routes answered it 405.
    /// </summary>
    [Theory]
    [InlineData("/v1/services")]
    [InlineData("/v1/services/a")]
    [InlineData("/v1/nodes")]
    [InlineData("/v1/tokens")]
    public async Task HeadAnswersAsGetDoesWithoutTheBody(string path)
    {
        // Over a socket: Kestrel, not the in-memory test server, leaves out a HEAD answer's body.
        await using var node = new RegistryNode(Cluster.ConnectionString);
        node.UseKestrel(0);
        node.StartServer();
        using var client = node.CreateClient();

        using var get = await client.GetAsync(path);
        using var head = await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, path));

        Assert.NotEqual(HttpStatusCode.MethodNotAllowed, get.StatusCode);
        Assert.Equal(get.StatusCode, head.StatusCode);
        Assert.Equal(get.Headers.ETag, head.Headers.ETag);
        Assert.Empty(await head.Content.ReadAsByteArrayAsync());
    }

    [Theory]
    [InlineData("text/html")]
    [InlineData("text/event-stream")]
    public async Task TheFrameworksOwnAnswersAreProblemDocumentsWhateverTheAcceptHeader(string accept)
    {
        using var missing = new HttpRequestMessage(HttpMethod.Get, "/v1/nothing") { Headers = { { "Accept", accept } } };
        using var wrongMethod = new HttpRequestMessage(HttpMethod.Get, "/v1/register") { Headers = { { "Accept", accept } } };

        using var missingResponse = await Client.SendAsync(missing);
        using var wrongMethodResponse = await Client.SendAsync(wrongMethod);

        await AssertProblemAsync(missingResponse, HttpStatusCode.NotFound, null);
        await AssertProblemAsync(wrongMethodResponse, HttpStatusCode.MethodNotAllowed, null);
    }

    [Theory]
    [InlineData("""{"application":"app","protocol":"http","addr":"[::1]:8080"}""")]
    [InlineData("""{"application":"app","protocol":"http","addr":"my-host.example.com:443"}""")]
    [InlineData("""{"application":"a.b_c-D9","protocol":"h2+tls.v-1","addr":"localhost:1"}""")]
    [InlineData("""{"application":"app","protocol":"http","addr":"10.0.0.1:65535","meta":{}}""")]
    public async Task WellFormedEdgeCasesAreAccepted(string body)
    {
        using var response = await Client.PostJsonAsync("/v1/register", body);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    [Fact]
    public async Task ADocumentBehindAUtf8ByteOrderMarkIsRead()
    {
        // PowerShell's Out-File writes one; curl -d @file sends it.
        using var content = new ByteArrayContent([0xEF, 0xBB, 0xBF, .. Encoding.UTF8.GetBytes(Good)]);
        content.Headers.ContentType = new("application/json");

        using var response = await Client.PostAsync("/v1/register", content);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    [Fact]
    public async Task AFormEncodedContentTypeIsReadAsJsonForCurlUsers()
    {
        using var response = await Client.PostAsync("/v1/register", new StringContent(Good, Encoding.UTF8, "application/x-www-form-urlencoded"));

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    [Fact]
    public async Task AClientOverTheRateLimitGetsTooManyRequestsWithRetryAfter()
    {
        await using var node = new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:RateLimit:PermitsPerSecond"] = "1",
            ["Registry:RateLimit:Burst"] = "2",
        });
        using var client = node.CreateClient();

        var statuses = new List<HttpStatusCode>();
        HttpResponseMessage? limited = null;
        for (var i = 0; i < 3; i++)
        {
            var response = await client.GetAsync("/v1/services");
            statuses.Add(response.StatusCode);
            limited = response;
        }

        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests], statuses);
        Assert.NotNull(limited!.Headers.RetryAfter);
        await AssertProblemAsync(limited, HttpStatusCode.TooManyRequests, null);
        using var health = await client.GetAsync("/healthz");
        Assert.Equal(HttpStatusCode.OK, health.StatusCode); // operations endpoints are never limited
    }

    [Fact]
    public async Task TheRateLimitCountsEachCredentialOnItsOwnFromOneAddress()
    {
        var first = "bootstrap-" + Guid.NewGuid().ToString("N");
        await using var node = new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:Auth:Mode"] = "Required",
            ["Registry:Auth:BootstrapToken"] = first,
            ["Registry:RateLimit:PermitsPerSecond"] = "1",
            ["Registry:RateLimit:Burst"] = "2",
        });
        using var admin = node.CreateClient();
        admin.DefaultRequestHeaders.Authorization = new("Bearer", first);
        using var created = await admin.PostAsync("/v1/tokens", new StringContent("""{"description":"second team","subscribe":["*"]}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var second = (string)JsonNode.Parse(await created.Content.ReadAsStringAsync())!["token"]!;

        // The first credential spends its burst...
        var limited = false;
        for (var i = 0; i < 5 && !limited; i++)
        {
            using var response = await admin.GetAsync("/v1/services");
            limited = response.StatusCode == HttpStatusCode.TooManyRequests;
        }

        Assert.True(limited);

        // ...while another team's token from the same address has its own.
        using var other = node.CreateClient();
        other.DefaultRequestHeaders.Authorization = new("Bearer", second);
        using var answered = await other.GetAsync("/v1/services");
        Assert.Equal(HttpStatusCode.OK, answered.StatusCode);
    }

    /// <summary>
    /// Without a credential, a client is its address; an IPv6 one is its network, as every per-client limit counts it:
    /// a host given a /64 may send from any address in it (before, each address had a fresh bucket of its own).
    /// </summary>
    [Theory]
    [InlineData("203.0.113.10", "203.0.113.10", "203.0.113.10", "203.0.113.11")]
    [InlineData("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::3", "2001:db8:1:3::1")]
    public async Task OnAnOpenNodeEachClientHasItsOwnRateLimit(string first, string second, string third, string other)
    {
        await using var node = new RegistryNode(Cluster.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:RateLimit:PermitsPerSecond"] = "1",
            ["Registry:RateLimit:Burst"] = "2",
            // The test is the proxy: it names the client address of each request.
            ["Registry:Network:TrustedProxies:0"] = "127.0.0.1",
        });
        node.UseKestrel(0);
        node.StartServer();
        using var client = node.CreateClient();

        var busy = new List<HttpStatusCode>();
        foreach (var address in new[] { first, second, third })
        {
            using var response = await GetForAsync(client, address);
            busy.Add(response.StatusCode);
        }

        using var elsewhere = await GetForAsync(client, other);
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests], busy);
        Assert.Equal(HttpStatusCode.OK, elsewhere.StatusCode);
    }

    private static async Task<HttpResponseMessage> GetForAsync(HttpClient client, string address)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/services");
        request.Headers.Add("X-Forwarded-For", address);
        return await client.SendAsync(request);
    }

    private static async Task AssertProblemAsync(HttpResponseMessage response, HttpStatusCode status, string? field)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonNode.Parse(text)!;
        Assert.Equal((int)status, (int)problem["status"]!);
        if (field is not null)
        {
            var errors = problem["errors"]?.AsObject();
            Assert.True(errors is not null && errors.ContainsKey(field), $"no error for '{field}' in {text}");
            Assert.False(string.IsNullOrWhiteSpace((string?)errors[field]![0]));
        }
    }
}
