using System.Text.Json.Nodes;
using Registry.OperationsTests.Infrastructure;

namespace Registry.OperationsTests;

/// <summary>
/// The OpenAPI document: the committed copy in openapi/ is what the service serves, and it
/// documents every operation, parameter and status. Regenerate the copy with
/// <c>UPDATE_OPENAPI=1 dotnet test tests/Registry.OperationsTests --filter FullyQualifiedName~OpenApiDocumentTests</c>.
/// </summary>
[Collection(LiveRegistryDefinition.Name)]
public sealed class OpenApiDocumentTests(LiveRegistry registry)
{
    private static readonly string CommittedPath = Repository.PathOf("openapi", "v1.json");

    [Fact]
    public async Task TheCommittedDocumentIsWhatTheServiceServes()
    {
        var served = Normalise(await ServedTextAsync());

        if (Environment.GetEnvironmentVariable("UPDATE_OPENAPI") == "1")
        {
            await File.WriteAllTextAsync(CommittedPath, served);
        }

        Assert.True(File.Exists(CommittedPath), $"{CommittedPath} is missing; run UPDATE_OPENAPI=1 dotnet test tests/Registry.OperationsTests --filter FullyQualifiedName~OpenApiDocumentTests");
        var committed = Normalise(await File.ReadAllTextAsync(CommittedPath));
        if (committed != served)
        {
            var a = committed.Split('\n');
            var b = served.Split('\n');
            var line = Enumerable.Range(0, Math.Min(a.Length, b.Length)).FirstOrDefault(i => a[i] != b[i], Math.Min(a.Length, b.Length));
            Assert.Fail($"openapi/v1.json differs from what /openapi/v1.json serves, first at line {line + 1}:\n" +
                $"  committed: {a.ElementAtOrDefault(line)}\n  served:    {b.ElementAtOrDefault(line)}\n" +
                "Regenerate it with: UPDATE_OPENAPI=1 dotnet test tests/Registry.OperationsTests --filter FullyQualifiedName~OpenApiDocumentTests");
        }
    }

    [Fact]
    public async Task EveryOperationHasASummaryADescriptionAndDescribedParameters()
    {
        var document = await ServedAsync();

        var operations = Operations(document).ToList();
        Assert.Equal(
            ["DELETE /v1/tokens/{id}", "GET /healthz", "GET /metrics", "GET /readyz", "GET /v1/nodes", "GET /v1/services", "GET /v1/services/{application}", "GET /v1/services/{application}/watchers",
             "GET /v1/tokens", "POST /v1/heartbeat", "POST /v1/register", "POST /v1/sessions", "POST /v1/subscribe", "POST /v1/tokens", "POST /v1/unregister"],
            operations.Select(o => o.Name).Order(StringComparer.Ordinal));
        Assert.All(operations, o =>
        {
            Assert.False(string.IsNullOrWhiteSpace((string?)o.Operation["summary"]), $"{o.Name} has no summary");
            Assert.False(string.IsNullOrWhiteSpace((string?)o.Operation["description"]), $"{o.Name} has no description");
            foreach (var parameter in o.Operation["parameters"]?.AsArray() ?? [])
            {
                Assert.False(string.IsNullOrWhiteSpace((string?)parameter!["description"]), $"{o.Name} parameter {parameter["name"]} is not described");
            }

            foreach (var (status, response) in o.Operation["responses"]!.AsObject())
            {
                Assert.False(string.IsNullOrWhiteSpace((string?)response!["description"]), $"{o.Name} {status} has no description");
            }
        });
    }

    [Fact]
    public async Task TheBearerSchemeServersAndEachOperationsSecurityAreDeclared()
    {
        var document = await ServedAsync();

        Assert.Equal("http", (string?)document["components"]!["securitySchemes"]!["bearer"]!["type"]);
        Assert.Equal("bearer", (string?)document["components"]!["securitySchemes"]!["bearer"]!["scheme"]);
        Assert.NotEmpty(document["servers"]!.AsArray());
        Assert.All(Operations(document), o =>
        {
            var security = o.Operation["security"]?.AsArray();
            Assert.True(security is not null, $"{o.Name} declares no security");
            var needsBearer = security.All(r => r!.AsObject().ContainsKey("bearer"));
            var optional = security.Any(r => r!.AsObject().Count == 0);
            if (o.Name.Contains(" /v1/", StringComparison.Ordinal))
            {
                Assert.True(needsBearer, $"{o.Name} must need the bearer scheme");
                Assert.True(o.Operation["responses"]!["401"] is not null && o.Operation["responses"]!["403"] is not null, $"{o.Name} lacks 401/403");
            }
            else
            {
                Assert.True(optional, $"{o.Name} must be open");
            }
        });
    }

    [Fact]
    public async Task EveryErrorStatusIsAProblemDocument()
    {
        var document = await ServedAsync();

        var errors = Operations(document)
            .Where(o => o.Name != "GET /readyz") // its 503 is the readiness report an orchestrator reads
            .SelectMany(o => o.Operation["responses"]!.AsObject().Where(r => r.Key[0] is '4' or '5').Select(r => (o.Name, Status: r.Key, Response: r.Value!)))
            .ToList();

        Assert.NotEmpty(errors);
        Assert.All(errors, e =>
        {
            var content = e.Response["content"]!.AsObject();
            Assert.Equal(["application/problem+json"], content.Select(c => c.Key));
            var reference = (string?)content["application/problem+json"]!["schema"]!["$ref"];
            Assert.Equal(e.Status == "400" ? "#/components/schemas/HttpValidationProblemDetails" : "#/components/schemas/ProblemDetails", reference);
        });
    }

    [Fact]
    public async Task TheThreeDocumentsOfTheApiAreTheExamples()
    {
        var document = await ServedAsync();
        var provider = JsonNode.Parse("""
            { "application": "provider_test", "protocol": "http", "addr": "127.0.0.1:8080",
              "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" } }
            """);
        var subscription = JsonNode.Parse("""
            { "subscribes": [
                { "provider": "test_provider1", "protocol": "http", "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" } },
                { "provider": "test_provider2", "protocol": "http", "meta": { "cluster": "small", "tag": "read" } } ] }
            """);
        var answer = JsonNode.Parse("""
            { "version": "23des4f", "endpoints": [
                { "application": "provider_test", "protocol": "http", "addr": "127.0.0.1:8080",
                  "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" } } ] }
            """);
        var paths = document["paths"]!;

        foreach (var path in new[] { "/v1/register", "/v1/heartbeat", "/v1/unregister" })
        {
            Assert.True(JsonNode.DeepEquals(provider, paths[path]!["post"]!["requestBody"]!["content"]!["application/json"]!["example"]), path);
        }

        Assert.True(JsonNode.DeepEquals(subscription, paths["/v1/subscribe"]!["post"]!["requestBody"]!["content"]!["application/json"]!["example"]));
        Assert.True(JsonNode.DeepEquals(answer, paths["/v1/subscribe"]!["post"]!["responses"]!["200"]!["content"]!["application/json"]!["example"]));
        Assert.True(JsonNode.DeepEquals(answer, paths["/v1/services/{application}"]!["get"]!["responses"]!["200"]!["content"]!["application/json"]!["example"]));
    }

    private async Task<string> ServedTextAsync()
    {
        using var client = registry.CreateClient();
        return await client.GetStringAsync(new Uri("/openapi/v1.json", UriKind.Relative));
    }

    private async Task<JsonNode> ServedAsync() => JsonNode.Parse(await ServedTextAsync())!;

    private static IEnumerable<(string Name, JsonNode Operation)> Operations(JsonNode document) =>
        document["paths"]!.AsObject().SelectMany(path => path.Value!.AsObject()
            .Select(method => ($"{method.Key.ToUpperInvariant()} {path.Key}", method.Value!)));

    /// <summary>Line endings and trailing whitespace only; the content must match exactly.</summary>
    private static string Normalise(string text) =>
        string.Join('\n', text.ReplaceLineEndings("\n").Split('\n').Select(l => l.TrimEnd())).TrimEnd() + "\n";
}
