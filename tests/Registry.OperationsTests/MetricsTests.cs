using System.Text.RegularExpressions;
using Registry.OperationsTests.Infrastructure;
using Registry.Tests.Infrastructure;

namespace Registry.OperationsTests;

/// <summary>/metrics: Prometheus text from the Registry meter and ASP.NET Core's.</summary>
[Collection(LiveRegistryDefinition.Name)]
public sealed partial class MetricsTests(LiveRegistry registry)
{
    [Fact]
    public async Task MetricsAnswerPrometheusTextCountingARegistration()
    {
        using var client = registry.CreateClient();
        using var registered = await client.PostJsonAsync("/v1/register", Http.Provider("metrics_probe", $"10.9.0.{Random.Shared.Next(1, 250)}:80"));
        registered.EnsureSuccessStatusCode();

        using var response = await client.GetAsync(new Uri("/metrics", UriKind.Relative));
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("# TYPE registry_registrations_total counter", text, StringComparison.Ordinal);
        Assert.Matches(CreatedCounter(), text);
        Assert.Contains("http_server_request_duration_seconds_bucket", text, StringComparison.Ordinal);
    }

    [GeneratedRegex("""(?m)^registry_registrations_total\{[^}]*result="(created|replaced)"[^}]*\} [1-9][0-9]*""")]
    private static partial Regex CreatedCounter();
}
