using System.Net;
using System.Text.Json.Nodes;
using Registry.Tests.Infrastructure;

namespace Registry.Tests.Access;

/// <summary>
/// Every endpoint against every kind of credential: the status, and for refusals the problem
/// document (401 with <c>WWW-Authenticate: Bearer</c>; 403 naming the application and the scope).
/// </summary>
[Collection(AccessTestsDefinition.Name)]
public sealed class AuthorizationMatrixTests(AccessCluster cluster)
{
    private const string Provider = """{"application":"payments","protocol":"http","addr":"10.0.0.1:8080","meta":{}}""";

    /// <summary>What each endpoint needs: a scope for the application <c>payments</c>, any credential, admin, or nothing.</summary>
    private static readonly Dictionary<string, (string Needs, Func<HttpClient, Task<HttpResponseMessage>> Call)> Endpoints = new(StringComparer.Ordinal)
    {
        ["POST /v1/register"] = ("register", c => c.PostJsonAsync("/v1/register", Provider)),
        ["POST /v1/heartbeat"] = ("register", c => c.PostJsonAsync("/v1/heartbeat", Provider)),
        ["POST /v1/unregister"] = ("register", c => c.PostJsonAsync("/v1/unregister", Provider)),
        ["POST /v1/unregister?drain=1"] = ("register", c => c.PostJsonAsync("/v1/unregister?drain=1", Provider)),
        ["POST /v1/sessions"] = ("register", SessionAsync),
        ["POST /v1/subscribe"] = ("subscribe", c => c.PostJsonAsync("/v1/subscribe", Http.Subscription(Http.Entry("payments")))),
        ["GET /v1/services/payments"] = ("subscribe", c => c.GetAsync(new Uri("/v1/services/payments", UriKind.Relative))),
        ["GET /v1/services/payments/watchers"] = ("subscribe", c => c.GetAsync(new Uri("/v1/services/payments/watchers", UriKind.Relative))),
        ["GET /v1/services"] = ("caller", c => c.GetAsync(new Uri("/v1/services", UriKind.Relative))),
        ["POST /v1/tokens"] = ("admin", c => c.PostJsonAsync("/v1/tokens", """{"description":"made in the matrix","subscribe":["*"]}""")),
        ["GET /v1/tokens"] = ("admin", c => c.GetAsync(new Uri("/v1/tokens", UriKind.Relative))),
        ["DELETE /v1/tokens/{id}"] = ("admin", c => c.DeleteAsync(new Uri("/v1/tokens/tok_none", UriKind.Relative))),
        ["GET /v1/nodes"] = ("admin", c => c.GetAsync(new Uri("/v1/nodes", UriKind.Relative))),
        ["GET /healthz"] = ("nothing", c => c.GetAsync(new Uri("/healthz", UriKind.Relative))),
        ["GET /readyz"] = ("nothing", c => c.GetAsync(new Uri("/readyz", UriKind.Relative))),
        ["GET /metrics"] = ("nothing", c => c.GetAsync(new Uri("/metrics", UriKind.Relative))),
        ["GET /openapi/v1.json"] = ("nothing", c => c.GetAsync(new Uri("/openapi/v1.json", UriKind.Relative))),
        ["GET /swagger/index.html"] = ("nothing", c => c.GetAsync(new Uri("/swagger/index.html", UriKind.Relative))),
    };

    /// <summary>The scopes each credential of <see cref="AccessCluster.Credentials"/> holds for <c>payments</c>; null: not authenticated.</summary>
    private static readonly Dictionary<string, string[]?> Holds = new(StringComparer.Ordinal)
    {
        ["none"] = null,
        ["malformed"] = null,
        ["unknown"] = null,
        ["expired"] = null,
        ["revoked"] = null,
        ["other application"] = [],
        ["subscribe-only"] = ["subscribe"],
        ["register-only"] = ["register"],
        ["admin"] = ["admin"],
        ["JWT"] = ["register", "subscribe"],
    };

    public static TheoryData<string, string> Cells()
    {
        var cells = new TheoryData<string, string>();
        foreach (var endpoint in Endpoints.Keys)
        {
            foreach (var credential in Holds.Keys)
            {
                cells.Add(endpoint, credential);
            }
        }

        return cells;
    }

    /// <summary>Opens a session; one that starts is read to its lease event and closed, and answers as that event.</summary>
    private static async Task<HttpResponseMessage> SessionAsync(HttpClient client)
    {
        var (response, stream) = await SessionReader.OpenAsync(client, Provider);
        if (stream is null)
        {
            return response;
        }

        await using (stream)
        {
            var lease = await stream.ReadAsync();
            return new HttpResponseMessage(HttpStatusCode.OK) { Content = new StringContent(lease?.Data ?? "") };
        }
    }

    [Theory]
    [MemberData(nameof(Cells))]
    public async Task EachEndpointAnswersEachCredentialAsTheContractSays(string endpoint, string credential)
    {
        var (needs, call) = Endpoints[endpoint];
        using var client = AccessCluster.Client(cluster.NodeA, cluster.Credentials[credential]);
        using var response = await call(client);
        var body = await response.Content.ReadAsStringAsync();
        var status = (int)response.StatusCode;
        var holds = Holds[credential];
        var cell = $"{endpoint} with {credential}: {status} {body}";

        if (needs == "nothing")
        {
            Assert.True(status == 200, cell);
            return;
        }

        if (holds is null)
        {
            Assert.True(status == 401, cell);
            Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            Assert.Equal(401, (int)JsonNode.Parse(body)!["status"]!);
            if (credential == "expired")
            {
                Assert.Contains("expired", body, StringComparison.Ordinal);
            }

            return;
        }

        if (needs == "caller" || holds.Contains(needs))
        {
            // Allowed: whatever the operation answers on its own (a heartbeat of nothing registered is a 404).
            Assert.True(status is 200 or 201 or 204 or 404, cell);
            Assert.True(status != 404 || endpoint is "POST /v1/heartbeat" or "POST /v1/unregister" or "POST /v1/unregister?drain=1" or "DELETE /v1/tokens/{id}", cell);
            return;
        }

        Assert.True(status == 403, cell);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonNode.Parse(body)!;
        Assert.Equal(needs, (string?)problem["scope"]);
        if (needs != "admin")
        {
            Assert.Equal("payments", (string?)problem["application"]);
            Assert.Contains("'payments'", (string?)problem["detail"], StringComparison.Ordinal);
        }

        Assert.Contains($"'{needs}'", (string?)problem["detail"], StringComparison.Ordinal);
    }
}
