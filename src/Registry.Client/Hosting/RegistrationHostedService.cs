using Microsoft.Extensions.Hosting;

namespace Registry.Client.Hosting;

/// <summary>
/// Registers the application itself once the host has started (so it is listening before consumers
/// learn of it) and, as soon as the host begins to stop, drains: unregisters and waits until the
/// registry confirms every consumer has been told (up to <see cref="RegistryClientOptions.DrainTimeout"/>),
/// so the host stops serving only once consumers have moved away.
/// </summary>
internal sealed class RegistrationHostedService(RegistryClient client, Func<IServiceProvider, ProviderInstance> instance, IServiceProvider services, RegistrationMode mode)
    : IHostedLifecycleService, IAsyncDisposable
{
    private RegistrationLease? _lease;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StartedAsync(CancellationToken cancellationToken) =>
        _lease = await client.RegisterAsync(instance(services), mode, cancellationToken).ConfigureAwait(false);

    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        var timeout = client.Options.DrainTimeout;
        if (timeout == TimeSpan.Zero || Interlocked.Exchange(ref _lease, null) is not { } lease)
        {
            await DisposeAsync().ConfigureAwait(false);
            return;
        }

        try
        {
            await lease.DrainAsync(timeout, cancellationToken).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Shutdown goes on: the lease logged the failure and unregistered plainly.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _lease, null) is { } lease)
        {
            await lease.DisposeAsync().ConfigureAwait(false);
        }
    }
}
