using Microsoft.Extensions.Options;
using Registry.Edge;
using Registry.Membership;

namespace Registry.Probes;

/// <summary>Wires registry probes: the rules, the HTTP client and the scheduler.</summary>
internal static class ProbeServiceExtensions
{
    public static IServiceCollection AddRegistryProbes(this IServiceCollection services)
    {
        services.AddOptions<ProbeOptions>().BindConfiguration(RegistryOptions.Section(nameof(RegistryOptions.Probes))).ValidateDataAnnotations()
            .Validate(o => o.DefaultIntervalSeconds <= o.MaxIntervalSeconds, "Registry:Probes needs DefaultIntervalSeconds <= MaxIntervalSeconds.")
            .Validate(o => o.RefreshInterval > TimeSpan.Zero, "Registry:Probes:RefreshInterval must be positive.")
            .Validate(o => o.ConnectionIdleTimeout >= TimeSpan.Zero, "Registry:Probes:ConnectionIdleTimeout must not be negative.")
            .Validate(o => o.ConnectionLifetime >= TimeSpan.Zero, "Registry:Probes:ConnectionLifetime must not be negative.")
            .Validate(o => o.SuspectSelfFor > TimeSpan.Zero, "Registry:Probes:SuspectSelfFor must be positive.")
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<ProbeOptions>, AllowedNetworksValidator>();
        services.AddSingleton<ProbeHostResolver>();
        services.AddSingleton<ProbeNetworks>();
        services.AddSingleton(provider => new NodeCapabilities(provider.GetRequiredService<ProbeNetworks>().Advertised));
        services.AddSingleton<ProbeRequests>();
        services.AddSingleton<Prober>();
        services.AddHttpClient(Prober.ClientName, (provider, client) =>
            {
                client.Timeout = Timeout.InfiniteTimeSpan; // each probe has its own
                client.DefaultRequestHeaders.UserAgent.ParseAdd($"registry-probe/1 (node {provider.GetRequiredService<NodeIdentity>().Id})");
            })
            .ConfigurePrimaryHttpMessageHandler(provider => Prober.Handler(provider.GetRequiredService<IOptions<ProbeOptions>>().Value))
            // The handler's pool holds the probes' kept-alive connections; rotating it would drop
            // them all. Addresses are re-checked at every probe, so rotation is not needed for DNS.
            .SetHandlerLifetime(Timeout.InfiniteTimeSpan)
            // One log line per probe would drown everything else; probes are counted in metrics.
            .RemoveAllLoggers();
        services.AddHostedService<ProbeScheduler>();
        return services;
    }

    private sealed class AllowedNetworksValidator : IValidateOptions<ProbeOptions>
    {
        public ValidateOptionsResult Validate(string? name, ProbeOptions options)
        {
            var errors = options.AllowedNetworks
                .Where(entry => !Network.IsAddressOrNetwork(entry))
                .Select(entry => $"Registry:Probes:AllowedNetworks: '{entry}' is neither an IP address nor a network in CIDR notation.")
                .ToList();
            return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
        }
    }
}
