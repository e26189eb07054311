using Microsoft.Extensions.Logging;
using Polly.Retry;

namespace Registry.Client;

/// <summary>
/// Logs a background loop's outage once: one warning when the registry becomes unreachable,
/// retries at debug level, one line when it answers again — no exception storm in the logs.
/// </summary>
internal sealed class OutageLog(ILogger logger, string operation)
{
    private readonly object _gate = new();
    private bool _failing;

    /// <summary>Marks the outage as begun without a retry (a first attempt that failed).</summary>
    public void Failed()
    {
        lock (_gate)
        {
            _failing = true;
        }
    }

    /// <summary>The retry pipeline's callback.</summary>
    public ValueTask OnRetry(OnRetryArguments<object> args)
    {
        var reason = args.Outcome.Exception?.Message ?? "";
        lock (_gate)
        {
            if (!_failing)
            {
                _failing = true;
                Log.OutageStarted(logger, operation, reason);
                return default;
            }
        }

        Log.Retrying(logger, args.AttemptNumber, operation, args.RetryDelay, reason);
        return default;
    }

    /// <summary>The registry answered: ends the outage, if there was one.</summary>
    public void Reached()
    {
        lock (_gate)
        {
            if (!_failing)
            {
                return;
            }

            _failing = false;
        }

        Log.OutageEnded(logger, operation);
    }
}
