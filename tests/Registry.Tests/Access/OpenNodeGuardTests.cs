using System.Net;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Registry.Access;
using Registry.Tests.Infrastructure;

namespace Registry.Tests.Access;

/// <summary>An Open node has no credential to stop a browser: what stands in for one.</summary>
public sealed class OpenNodeGuardTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    [Theory]
    // A page elsewhere posting (text/plain needs no preflight) through a developer's browser.
    [InlineData("http://evil.example", "localhost", HttpStatusCode.Forbidden)]
    [InlineData("null", "localhost", HttpStatusCode.Forbidden)]
    [InlineData("http://localhost:8080", "localhost", HttpStatusCode.Forbidden)]
    [InlineData("http://evil.example", "localhost", HttpStatusCode.Forbidden, "cross-site")]
    [InlineData("http://localhost, http://evil.example", "localhost", HttpStatusCode.Forbidden)]
    // A page whose name was pointed at 127.0.0.1 (DNS rebinding): same-origin for the browser, not for the node.
    [InlineData("http://evil.example", "evil.example", HttpStatusCode.BadRequest, "same-origin")]
    [InlineData(null, "evil.example", HttpStatusCode.BadRequest)]
    // The Swagger UI the node serves (also through a proxy that dropped the port), and clients that are not browsers.
    [InlineData("http://localhost", "localhost", HttpStatusCode.Created)]
    [InlineData("http://localhost:5080", "localhost", HttpStatusCode.Created, "same-origin")]
    [InlineData("http://127.0.0.1", "127.0.0.1", HttpStatusCode.Created)]
    [InlineData("http://[::1]", "[::1]", HttpStatusCode.Created)]
    [InlineData(null, "[::1]", HttpStatusCode.Created)]
    public async Task ABrowserPageFromElsewhereCannotCallALoopbackOpenNode(string? origin, string host, HttpStatusCode expected, string? fetchSite = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/register")
        {
            Content = new StringContent(Http.Provider("guarded", "10.0.0.1:80"), System.Text.Encoding.UTF8, "text/plain"),
        };
        request.Headers.Host = host;
        if (origin is not null)
        {
            request.Headers.TryAddWithoutValidation("Origin", origin.Split(", "));
        }

        if (fetchSite is not null)
        {
            request.Headers.Add("Sec-Fetch-Site", fetchSite);
        }

        using var response = await Client.SendAsync(request);

        Assert.True(response.StatusCode == expected, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        if (expected != HttpStatusCode.Created)
        {
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
    }

    /// <summary>
    /// A proxy on the machine of a node Open by default (the one-command start, on its embedded PostgreSQL) sends from
    /// loopback with a loopback Host: before, the node answered it, and so anyone who reached the proxy, without
    /// credentials. What a proxy adds gives it away. (The node here is Open as that start decides it.)
    /// </summary>
    [Theory]
    [InlineData("X-Forwarded-For", "203.0.113.7")]
    [InlineData("X-Real-IP", "203.0.113.7")]
    [InlineData("Forwarded", "for=203.0.113.7")]
    [InlineData("Via", "1.1 nginx")]
    public async Task ALoopbackOpenNodeAnswersNoProxy(string header, string value)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/tokens") { Content = Http.Json("""{"description":"x","admin":true}""") };
        request.Headers.Host = "localhost:5080";
        request.Headers.TryAddWithoutValidation(header, value);

        await using var node = new RegistryNode(Cluster.ConnectionString);
        using var byDefault = node.WithWebHostBuilder(host => host.ConfigureTestServices(services => services.AddSingleton(
            AccessServiceExtensions.DecideMode(new ConfigurationBuilder().AddInMemoryCollection([new("urls", "http://localhost:5080")]).Build(), embeddedDatabase: true))));
        using var response = await byDefault.CreateClient().SendAsync(request);

        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        Assert.Contains(header, (string?)(await response.ReadJsonAsync())["detail"], StringComparison.Ordinal);
    }
}
