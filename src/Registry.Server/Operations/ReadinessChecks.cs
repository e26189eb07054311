using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Registry.Operations;

/// <summary>
/// The checks behind <c>/readyz</c> as ASP.NET Core health checks (tagged <see cref="Tag"/>),
/// so the framework runs them and anything that reads health reports sees them. The three are
/// parts of one <see cref="ReadinessProbe"/> round trip, which keeps its rule of at most one
/// statement a second however many checks and callers ask.
/// </summary>
internal sealed class ReadinessCheck(ReadinessProbe probe, string name) : IHealthCheck
{
    /// <summary>The tag of the checks that decide readiness.</summary>
    public const string Tag = "ready";

    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken)
    {
        // The shared check runs on its own; a caller that leaves only stops waiting for it.
        var result = (await probe.CheckAsync().WaitAsync(cancellationToken))[name];
        return result.Ok ? HealthCheckResult.Healthy(result.Detail) : HealthCheckResult.Unhealthy(result.Detail);
    }
}

/// <summary>Registers the readiness checks.</summary>
internal static class ReadinessChecks
{
    public static IServiceCollection AddRegistryReadiness(this IServiceCollection services)
    {
        services.AddSingleton<ReadinessProbe>();
        var checks = services.AddHealthChecks();
        foreach (var name in ReadinessProbe.Checks)
        {
            checks.Add(new HealthCheckRegistration(
                name,
                provider => new ReadinessCheck(provider.GetRequiredService<ReadinessProbe>(), name),
                failureStatus: HealthStatus.Unhealthy,
                tags: [ReadinessCheck.Tag]));
        }

        return services;
    }
}
