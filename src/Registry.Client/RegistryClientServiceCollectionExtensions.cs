using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.ServiceDiscovery;
using Registry.Client;
using Registry.Client.Hosting;
using Registry.Client.ServiceDiscovery;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the registry client to a service collection.</summary>
public static class RegistryClientServiceCollectionExtensions
{
    /// <summary>The name of the <see cref="HttpClient"/> the registry client sends with (configure it with <c>AddHttpClient(name)</c>).</summary>
    public const string HttpClientName = "Registry.Client";

    /// <summary>
    /// Adds a singleton <see cref="RegistryClient"/> bound to the configuration section <c>RegistryClient</c>
    /// (when an <c>IConfiguration</c> is registered) and then to <paramref name="configure"/>; the options are
    /// validated at start. It sends through <see cref="IHttpClientFactory"/>'s client named <see cref="HttpClientName"/>.
    /// </summary>
    public static IServiceCollection AddRegistryClient(this IServiceCollection services, Action<RegistryClientOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        // Bound only when the container has a configuration: a plain ServiceCollection (tools, tests) has none.
        var options = services.AddOptions<RegistryClientOptions>()
            .Configure<IServiceProvider>((o, provider) => provider.GetService<IConfiguration>()?.GetSection(RegistryClientOptions.SectionName).Bind(o))
            .ValidateOnStart();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RegistryClientOptions>, RegistryClientOptionsValidator>());
        // Timeouts are the client's own, per request: the wait plus a margin for a long poll, RequestTimeout for the rest.
        // One fixed HttpClient.Timeout cannot fit both, and must never be the one that cuts a poll.
        services.AddHttpClient(HttpClientName, http => http.Timeout = Timeout.InfiniteTimeSpan)
            .ConfigurePrimaryHttpMessageHandler(provider =>
            {
                var options = provider.GetRequiredService<IOptions<RegistryClientOptions>>().Value;
                return new SocketsHttpHandler
                {
                    ConnectTimeout = options.ConnectTimeout,
                    ConnectCallback = options.TcpKeepAlive > TimeSpan.Zero ? TcpKeepAlive.Connect(options.TcpKeepAlive) : null,
                };
            })
            // What an app configures for every client (ConfigureHttpClientDefaults runs before any named client's
            // configuration, whatever the order of the calls) does not fit this one: a standard resilience handler's
            // timeouts cut the long polls and its retries double the client's own; service discovery would resolve the
            // registry through itself. Handlers added to this name after AddRegistryClient are kept.
            .ConfigureAdditionalHttpMessageHandlers(static (handlers, _) => handlers.Clear())
            // The factory's request logging writes every failed attempt of an outage with its stack trace; the client logs
            // one warning per outage itself.
            .RemoveAllLoggers();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton(provider => new RegistryClient(
            provider.GetRequiredService<IHttpClientFactory>(),
            HttpClientName,
            provider.GetRequiredService<IOptions<RegistryClientOptions>>().Value,
            provider.GetService<ILoggerFactory>(),
            provider.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton<IRegistryClient>(provider => provider.GetRequiredService<RegistryClient>());
        return services;
    }

    /// <summary>
    /// Registers the application itself once the host has started, keeps the registration alive, and
    /// unregisters when the host begins to stop. Needs <see cref="AddRegistryClient"/>.
    /// </summary>
    public static IServiceCollection AddRegistryRegistration(this IServiceCollection services, Func<IServiceProvider, ProviderInstance> instance) =>
        services.AddRegistryRegistration(instance, RegistrationMode.Heartbeat);

    /// <summary>
    /// As <see cref="AddRegistryRegistration(IServiceCollection, Func{IServiceProvider, ProviderInstance})"/>, kept alive the way
    /// <paramref name="mode"/> says (heartbeats, a session, or registry probes).
    /// </summary>
    public static IServiceCollection AddRegistryRegistration(this IServiceCollection services, Func<IServiceProvider, ProviderInstance> instance, RegistrationMode mode)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(instance);
        ArgumentNullException.ThrowIfNull(mode);
        services.AddSingleton<IHostedService>(provider => new RegistrationHostedService(provider.GetRequiredService<RegistryClient>(), instance, provider, mode));
        return services;
    }

    /// <summary>Registers a fixed instance kept alive the way <paramref name="mode"/> says.</summary>
    public static IServiceCollection AddRegistryRegistration(this IServiceCollection services, ProviderInstance instance, RegistrationMode mode) =>
        services.AddRegistryRegistration(_ => instance, mode);

    /// <summary>Registers a fixed instance; see <see cref="AddRegistryRegistration(IServiceCollection, Func{IServiceProvider, ProviderInstance})"/>.</summary>
    public static IServiceCollection AddRegistryRegistration(this IServiceCollection services, ProviderInstance instance) =>
        services.AddRegistryRegistration(_ => instance);

    /// <summary>
    /// Adds service discovery (<c>AddServiceDiscoveryCore</c>) with the registry as an endpoint provider, so that
    /// an <see cref="HttpClient"/> with base address <c>http://provider_test</c> and <c>AddServiceDiscovery()</c> calls
    /// the instances of <c>provider_test</c> that serve <c>http</c>. It is placed before the other providers:
    /// the registry is the authority, and a name that is not a registered application (or not in
    /// <see cref="RegistryClientOptions.DiscoveryApplications"/> when that is set) falls through to them. Needs <see cref="AddRegistryClient"/>.
    /// </summary>
    public static IServiceCollection AddRegistryServiceEndpointProvider(this IServiceCollection services)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddServiceDiscoveryCore();
        if (!services.Any(d => d.ServiceType == typeof(IServiceEndpointProviderFactory) && d.ImplementationType == typeof(RegistryServiceEndpointProviderFactory)))
        {
            services.Insert(0, ServiceDescriptor.Singleton<IServiceEndpointProviderFactory, RegistryServiceEndpointProviderFactory>());
        }

        return services;
    }
}
