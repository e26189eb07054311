using System.Net;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.OpenApi;
using Registry.Tests.Infrastructure;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace Registry.Tests;

/// <summary>The three JSON documents of API.md, exactly as written, and the status codes around them.</summary>
public sealed class ApiDocumentTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private const string SpecProvider = """
        {
          "application": "provider_test",
          "protocol": "http",
          "addr": "127.0.0.1:8080",
          "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" }
        }
        """;

    private const string SpecSubscription = """
        {
          "subscribes": [
            { "provider": "test_provider1", "protocol": "http",
              "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" } },
            { "provider": "test_provider2", "protocol": "http",
              "meta": { "cluster": "small", "tag": "read" } }
          ]
        }
        """;

    [Fact]
    public async Task RegisteringTheSpecProviderAnswersCreatedWithTheProviderDocumentAndItsLease()
    {
        var before = DateTime.UtcNow;
        using var response = await Client.PostJsonAsync("/v1/register?ttl=60", SpecProvider);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = (JsonObject)await response.ReadJsonAsync();
        Assert.Equal(["application", "protocol", "addr", "meta", "ttl", "expires"], body.Select(p => p.Key));
        Assert.Equal("provider_test", (string?)body["application"]);
        Assert.Equal("http", (string?)body["protocol"]);
        Assert.Equal("127.0.0.1:8080", (string?)body["addr"]);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"cluster":"small","idc":"shanghai","tag":"read"}"""), body["meta"]));
        Assert.Equal(60, (int)body["ttl"]!);
        var expires = (string)body["expires"]!;
        Assert.EndsWith("Z", expires, StringComparison.Ordinal);
        var at = DateTime.Parse(expires, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AdjustToUniversal);
        Assert.InRange(at, before.AddSeconds(55), DateTime.UtcNow.AddSeconds(65));
    }

    [Fact]
    public async Task TheSpecSubscriptionAnswersWithTheSpecAnswerDocument()
    {
        await Client.PostJsonAsync("/v1/register", SpecProvider.Replace("provider_test", "test_provider1", StringComparison.Ordinal));
        await Client.PostJsonAsync("/v1/register", Http.Provider("test_provider2", "10.0.0.2:80", """{"cluster":"small","tag":"read"}"""));
        await Client.PostJsonAsync("/v1/register", Http.Provider("test_provider2", "10.0.0.3:80", """{"cluster":"big","tag":"read"}"""));

        using var response = await Client.PostJsonAsync("/v1/subscribe", SpecSubscription);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        var body = (JsonObject)await response.ReadJsonAsync();
        Assert.Equal(["version", "endpoints"], body.Select(p => p.Key));
        var version = (string)body["version"]!;
        Assert.Matches("^[\\x21-\\x7e]+$", version);
        Assert.Equal($"\"{version}\"", response.Headers.ETag?.Tag);
        var expected = JsonNode.Parse("""
            [
              { "application": "test_provider1", "protocol": "http", "addr": "127.0.0.1:8080",
                "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" } },
              { "application": "test_provider2", "protocol": "http", "addr": "10.0.0.2:80",
                "meta": { "cluster": "small", "tag": "read" } }
            ]
            """);
        Assert.True(JsonNode.DeepEquals(expected, body["endpoints"]), body.ToJsonString());
        Assert.All(body["endpoints"]!.AsArray(), e => Assert.Equal(["application", "protocol", "addr", "meta"], e!.AsObject().Select(p => p.Key)));
    }

    [Fact]
    public async Task RegisteringTheSameInstanceAgainReplacesItsMetaWithoutADuplicate()
    {
        using var first = await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80", """{"v":"1"}"""));
        using var second = await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80", """{"v":"2"}"""));

        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        var (_, _, body) = await Client.SubscribeAsync(Http.Subscription(Http.Entry("app")));
        var endpoint = Assert.Single(body!["endpoints"]!.AsArray());
        Assert.Equal("2", (string?)endpoint!["meta"]!["v"]);
    }

    [Fact]
    public async Task UnregisterAnswersNoContentThenNotFound()
    {
        await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80"));

        using var removed = await Client.PostJsonAsync("/v1/unregister", """{"application":"app","protocol":"http","addr":"10.0.0.1:80"}""");
        using var again = await Client.PostJsonAsync("/v1/unregister", """{"application":"app","protocol":"http","addr":"10.0.0.1:80"}""");

        Assert.Equal(HttpStatusCode.NoContent, removed.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, again.StatusCode);
        Assert.Equal("application/problem+json", again.Content.Headers.ContentType?.MediaType);
        var (_, _, body) = await Client.SubscribeAsync(Http.Subscription(Http.Entry("app")));
        Assert.Empty(body!["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task HeartbeatAnswersTheStoredLeaseAndNotFoundForAnUnknownInstance()
    {
        await Client.PostJsonAsync("/v1/register?ttl=40", Http.Provider("app", "10.0.0.1:80", """{"k":"v"}"""));

        using var known = await Client.PostJsonAsync("/v1/heartbeat", """{"application":"app","protocol":"http","addr":"10.0.0.1:80","meta":{"ignored":"yes"}}""");
        using var unknown = await Client.PostJsonAsync("/v1/heartbeat", """{"application":"app","protocol":"http","addr":"10.0.0.9:80"}""");

        Assert.Equal(HttpStatusCode.OK, known.StatusCode);
        var body = await known.ReadJsonAsync();
        Assert.Equal(40, (int)body["ttl"]!);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"k":"v"}"""), body["meta"]));
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Equal("application/problem+json", unknown.Content.Headers.ContentType?.MediaType);
    }

    [Theory]
    [InlineData(null, 30)]
    [InlineData("0", -1)]
    [InlineData("5", 5)]
    [InlineData("999999", 86400)]
    [InlineData("99999999999999999999999", 86400)]
    public async Task TtlIsDefaultedAndClampedOrRefused(string? ttl, int granted)
    {
        using var response = await Client.PostJsonAsync(ttl is null ? "/v1/register" : $"/v1/register?ttl={ttl}", Http.Provider("app", "10.0.0.1:80"));

        if (granted < 0)
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("ttl", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }
        else
        {
            Assert.Equal(granted, (int)(await response.ReadJsonAsync())["ttl"]!);
        }
    }

    [Fact]
    public async Task TheServicesListCountsInstancesPerApplicationSortedByName()
    {
        await Client.PostJsonAsync("/v1/register", Http.Provider("provider_test", "10.0.0.1:80"));
        await Client.PostJsonAsync("/v1/register", Http.Provider("provider_test", "10.0.0.2:80"));
        await Client.PostJsonAsync("/v1/register", Http.Provider("Alpha", "10.0.0.3:80"));

        using var response = await Client.GetAsync("/v1/services");

        var expected = JsonNode.Parse("""{"services":[{"application":"Alpha","instances":1},{"application":"provider_test","instances":2}]}""");
        Assert.True(JsonNode.DeepEquals(expected, await response.ReadJsonAsync()));
    }

    [Fact]
    public async Task ServiceGetIsTheOneProviderSubscriptionWithFilters()
    {
        await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.1:80", """{"idc":"sh","tag":"read"}"""));
        await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.2:80", """{"idc":"bj"}"""));
        await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.3:81", """{"idc":"sh"}""", protocol: "grpc"));

        using var response = await Client.GetAsync("/v1/services/app?protocol=http&meta.idc=sh");
        var (_, _, viaSubscribe) = await Client.SubscribeAsync(Http.Subscription(Http.Entry("app", "http", """{"idc":"sh"}""")));

        var body = await response.ReadJsonAsync();
        Assert.Equal("10.0.0.1:80", (string?)Assert.Single(body["endpoints"]!.AsArray())!["addr"]);
        Assert.True(JsonNode.DeepEquals(viaSubscribe, body));
        Assert.Equal($"\"{(string?)body["version"]}\"", response.Headers.ETag?.Tag);

        // Meta keys are case-sensitive, in a query too: two keys, not one given twice.
        await Client.PostJsonAsync("/v1/register", Http.Provider("app", "10.0.0.4:80", """{"idc":"sh","Idc":"bj"}"""));
        using var cased = await Client.GetAsync("/v1/services/app?meta.idc=sh&meta.Idc=bj");
        Assert.Equal(HttpStatusCode.OK, cased.StatusCode);
        Assert.Equal("10.0.0.4:80", (string?)Assert.Single((await cased.ReadJsonAsync())["endpoints"]!.AsArray())!["addr"]);
    }

    [Fact]
    public async Task AnUnknownApplicationIsAnEmptyAnswer()
    {
        using var response = await Client.GetAsync("/v1/services/nobody");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Empty((await response.ReadJsonAsync())["endpoints"]!.AsArray());
    }

    [Fact]
    public async Task HealthAndReadinessAnswer()
    {
        using var health = await Client.GetAsync("/healthz");
        using var ready = await Client.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        var body = await ready.ReadJsonAsync();
        Assert.Equal("ready", (string?)body["status"]);
        Assert.True((bool)body["checks"]!["changeFeed"]!["ok"]!);
    }

    [Fact]
    public async Task HealthAndReadinessAnswerHeadAndMetricsOnlyGetAndHead()
    {
        // Load balancers and uptime checkers often probe with HEAD.
        using var health = await Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/healthz"));
        using var ready = await Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/readyz"));
        using var metrics = await Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/metrics"));
        using var deleteMetrics = await Client.SendAsync(new HttpRequestMessage(HttpMethod.Delete, "/metrics"));

        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal(HttpStatusCode.OK, metrics.StatusCode);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, deleteMetrics.StatusCode);
        Assert.Equal("application/problem+json", deleteMetrics.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task TheOpenApiDocumentIsBuiltOnceHoweverOftenItIsAsked()
    {
        // Anyone may ask for it, before authentication and the rate limiter: building it each
        // time (reflection over every endpoint, the XML comments, ~90 KB written) would make it
        // the cheapest way to load a node.
        var built = new CountingDocumentFilter();
        await using var registry = new RegistryNode(await Cluster.CreateDatabaseAsync());
        await using var node = registry.WithWebHostBuilder(b => b.ConfigureTestServices(s => s.ConfigureSwaggerGen(
            swagger => swagger.DocumentFilterDescriptors.Add(new FilterDescriptor { Type = typeof(CountingDocumentFilter), FilterInstance = built }))));
        using var client = node.CreateClient();

        var first = await client.GetByteArrayAsync("/openapi/v1.json");
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(first, await client.GetByteArrayAsync("/openapi/v1.json"));
        }

        Assert.Equal(1, built.Count);
        using var unknown = await client.GetAsync("/openapi/v2.json");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
    }

    private sealed class CountingDocumentFilter : IDocumentFilter
    {
        private int _count;

        public int Count => Volatile.Read(ref _count);

        public void Apply(OpenApiDocument swaggerDoc, DocumentFilterContext context) => Interlocked.Increment(ref _count);
    }
}
