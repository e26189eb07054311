namespace Registry.Client;

/// <summary>
/// What <see cref="RegistryClient"/> offers, as an interface so that an application's own code can be
/// tested with a fake. Dependency injection registers <see cref="RegistryClient"/> under it too.
/// </summary>
public interface IRegistryClient
{
    /// <summary>Registers an instance and keeps it registered until the returned lease is disposed.</summary>
    Task<RegistrationLease> RegisterAsync(ProviderInstance instance, CancellationToken cancellationToken = default);

    /// <summary>
    /// Registers an instance kept alive the way <paramref name="mode"/> says (heartbeats, a session, or registry probes)
    /// until the returned lease is disposed. Implementations that know only heartbeats need not override it.
    /// </summary>
    Task<RegistrationLease> RegisterAsync(ProviderInstance instance, RegistrationMode mode, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(mode);
        return mode.Kind == RegistrationKind.Heartbeat
            ? RegisterAsync(instance, cancellationToken)
            : throw new NotSupportedException($"This registry client does not support {mode} registrations.");
    }

    /// <summary>Starts a subscription to the union of the entries' matches.</summary>
    Task<RegistrySubscription> SubscribeAsync(IEnumerable<SubscriptionEntry> subscribes, CancellationToken cancellationToken = default);

    /// <summary>Starts a subscription to one provider.</summary>
    Task<RegistrySubscription> SubscribeAsync(SubscriptionEntry entry, CancellationToken cancellationToken = default);

    /// <summary>
    /// Asks once for the instances of <paramref name="application"/> (<c>GET /v1/services/{application}</c>), over every
    /// node, without subscribing. With <paramref name="ifNoneMatch"/> (a version held), answers <see langword="null"/>
    /// when that is still the current version.
    /// </summary>
    Task<RegistryAnswer?> GetServiceAsync(string application, string? ifNoneMatch = null, CancellationToken cancellationToken = default);
}
