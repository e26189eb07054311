using Microsoft.Extensions.Options;
using Registry.Telemetry;

namespace Registry.Subscription;

/// <summary>
/// Lets a few large answers onto the wire at a time. A change to a big application wakes every
/// consumer of it at once; written all together, their megabytes fill the socket queues and the
/// thread pool, and every other reply of the node (the registration that caused the change
/// among them) waits behind them. Admitted a few at a time, in the order they were woken, the
/// same bytes go out as fast and the node's other requests pass between them.
/// </summary>
// The semaphore is never disposed: it creates no wait handle, and the last answers of a
// shutdown are still being written while the host disposes its services.
#pragma warning disable CA1001
internal sealed class AnswerWriters(IOptions<SubscriptionOptions> options, TimeProvider time, RegistryMetrics metrics)
#pragma warning restore CA1001
{
    private readonly SemaphoreSlim _turns = new(
        options.Value.LargeAnswerWriters is > 0 and var writers ? writers : Environment.ProcessorCount);

    private readonly TimeSpan _slowReader = options.Value.SlowReaderYield;
    private readonly TimeProvider _time = time;

    /// <summary>Waits for a turn to write one large answer; dispose the turn when the answer is written.</summary>
    public async ValueTask<Turn> EnterAsync(CancellationToken cancellationToken)
    {
        if (!_turns.Wait(0, CancellationToken.None))
        {
            metrics.AnswerWaiting(1);
            try
            {
                await _turns.WaitAsync(cancellationToken);
            }
            finally
            {
                metrics.AnswerWaiting(-1);
            }
        }

        return new Turn(this);
    }

    /// <summary>One answer's turn. Its reader's slowness is its own: a flush that outlasts <see cref="SubscriptionOptions.SlowReaderYield"/> gives the turn up.</summary>
    internal sealed class Turn(AnswerWriters writers) : IDisposable
    {
        private int _held = 1;

        /// <summary>Awaits a flush that did not complete at once, leaving the turn if the reader is slow.</summary>
        public async ValueTask FlushAsync(ValueTask<System.IO.Pipelines.FlushResult> flush)
        {
            if (flush.IsCompleted || Volatile.Read(ref _held) == 0)
            {
                await flush;
                return;
            }

            var pending = flush.AsTask();
            try
            {
                await pending.WaitAsync(writers._slowReader, writers._time);
            }
            catch (TimeoutException)
            {
                Dispose();
                await pending;
            }
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _held, 0) == 1)
            {
                writers._turns.Release();
            }
        }
    }
}
