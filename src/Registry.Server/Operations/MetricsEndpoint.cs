using OpenTelemetry.Metrics;
using Registry.Telemetry;

namespace Registry.Operations;

/// <summary>
/// Exports the <see cref="RegistryMetrics"/> instruments, and ASP.NET Core's own request and
/// connection meters, in Prometheus text format at <c>/metrics</c>.
/// </summary>
/// <remarks>
/// OpenTelemetry's exporter keeps the instruments' kinds (a counter stays a Prometheus counter
/// with <c>_total</c>), applies the histogram bucket advice and the unit suffixes, and lives in
/// the host's container, so nothing here is process-wide state.
/// </remarks>
internal static class MetricsEndpoint
{
    public const string Path = "/metrics";

    /// <summary>
    /// The meters ASP.NET Core publishes for requests and connections, and the runtime's own
    /// (GC heap sizes and pauses, thread-pool queue length): cheap, already measured, and what
    /// tells a memory or latency problem in the registry from one in the runtime.
    /// </summary>
    private static readonly string[] FrameworkMeters = ["Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel", "System.Runtime"];

    public static IServiceCollection AddRegistryMetricsExport(this IServiceCollection services)
    {
        services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(RegistryMetrics.MeterName)
            .AddMeter(FrameworkMeters)
            // No response cache: a scrape right after a change must show it (Prometheus scrapes
            // every few seconds at most, so caching saves nothing worth the surprise).
            .AddPrometheusExporter(prometheus => prometheus.ScrapeResponseCacheDurationMilliseconds = 0));
        return services;
    }

    public static IEndpointRouteBuilder MapMetrics(this IEndpointRouteBuilder endpoints)
    {
        // Open unless Registry:Auth:ProtectMetrics (the policy decides at each scrape).
        endpoints.MapPrometheusScrapingEndpoint(Path).RequireAuthorization(Registry.Access.AccessPolicies.Metrics)
            // The exporter maps every method: anything but a read is a 405 like elsewhere.
            .WithMetadata(new HttpMethodMetadata([HttpMethods.Get, HttpMethods.Head]));
        return endpoints;
    }
}
