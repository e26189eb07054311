using Microsoft.Extensions.Hosting;

namespace Registry.Client.Hosting;

/// <summary>
/// Registers the application itself once the host has started (so it is listening before consumers
/// learn of it) and unregisters as soon as the host begins to stop (so consumers move away while
/// in-flight requests drain).
/// </summary>
internal sealed class RegistrationHostedService(RegistryClient client, Func<IServiceProvider, ProviderInstance> instance, IServiceProvider services, RegistrationMode mode)
    : IHostedLifecycleService, IAsyncDisposable
{
    private RegistrationLease? _lease;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StartedAsync(CancellationToken cancellationToken) =>
        _lease = await client.RegisterAsync(instance(services), mode, cancellationToken).ConfigureAwait(false);

    public Task StoppingAsync(CancellationToken cancellationToken) => DisposeAsync().AsTask();

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
