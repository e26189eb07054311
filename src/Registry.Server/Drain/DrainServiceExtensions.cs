using Registry.Storage;
using Registry.Subscription;

namespace Registry.Drain;

/// <summary>Wires confirmed drain and the watchers view.</summary>
internal static class DrainServiceExtensions
{
    public static IServiceCollection AddRegistryDrain(this IServiceCollection services)
    {
        services.AddOptions<DrainOptions>().BindConfiguration(RegistryOptions.Section(nameof(RegistryOptions.Drain))).ValidateDataAnnotations()
            .Validate(o => o.ReportInterval > TimeSpan.Zero && o.NodesRefreshInterval > TimeSpan.Zero && o.WatchersWait > TimeSpan.Zero, "Registry:Drain intervals must be positive.")
            .ValidateOnStart();
        services.AddSingleton<DrainTracker>();
        services.AddSingleton<IChangeWitness>(provider => provider.GetRequiredService<DrainTracker>());
        services.AddSingleton<DrainCoordinator>();
        services.AddSingleton<DrainQuestions>();
        services.AddSingleton<IChangeFeedChannel>(provider => ActivatorUtilities.CreateInstance<DrainChannel>(provider, DrainMessenger.Channel));
        services.AddSingleton<IChangeFeedChannel>(provider =>
            ActivatorUtilities.CreateInstance<DrainChannel>(provider, DrainMessages.ReplyChannelOf(provider.GetRequiredService<Membership.NodeIdentity>().Id)));
        services.AddSingleton<DrainMessenger>();
        services.AddHostedService(provider => provider.GetRequiredService<DrainMessenger>());
        return services;
    }
}
