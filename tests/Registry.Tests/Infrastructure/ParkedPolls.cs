using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace Registry.Tests.Infrastructure;

/// <summary>
/// Counts the polls parked on one node through its <c>registry.polls.parked</c> instrument,
/// so a test can await "the consumer is parked" instead of sleeping.
/// </summary>
public sealed class ParkedPolls : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Lock _gate = new();
    private readonly List<(Func<long, bool> Condition, TaskCompletionSource Reached)> _waiters = [];
    private long _parked;

    public ParkedPolls(RegistryNode node)
    {
        var scope = node.Services.GetRequiredService<IMeterFactory>();
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Name == "registry.polls.parked" && ReferenceEquals(instrument.Meter.Scope, scope))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((_, delta, _, _) => Add(delta));
        _listener.Start();
    }

    public long Count => Interlocked.Read(ref _parked);

    /// <summary>Completes once at least <paramref name="count"/> polls are parked.</summary>
    public Task WaitForAsync(long count, TimeSpan? timeout = null) => WaitUntilAsync(parked => parked >= count, timeout);

    /// <summary>Completes once no poll is parked.</summary>
    public Task WaitForNoneAsync(TimeSpan? timeout = null) => WaitUntilAsync(parked => parked <= 0, timeout);

    private Task WaitUntilAsync(Func<long, bool> condition, TimeSpan? timeout)
    {
        lock (_gate)
        {
            if (condition(_parked))
            {
                return Task.CompletedTask;
            }

            var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((condition, reached));
            return reached.Task.WaitAsync(timeout ?? TimeSpan.FromSeconds(10));
        }
    }

    private void Add(long delta)
    {
        lock (_gate)
        {
            _parked += delta;
            foreach (var waiter in _waiters.Where(w => w.Condition(_parked)).ToArray())
            {
                waiter.Reached.TrySetResult();
                _waiters.Remove(waiter);
            }
        }
    }

    public void Dispose() => _listener.Dispose();
}
