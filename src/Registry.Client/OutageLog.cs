using Microsoft.Extensions.Logging;

namespace Registry.Client;

/// <summary>
/// Logs a background loop's outage once: one warning when the registry becomes unreachable,
/// retries at debug level, one line when it answers again — no exception storm in the logs.
/// </summary>
internal sealed class OutageLog(ILogger logger, string operation)
{
    private readonly object _gate = new();
    private bool _failing;

    /// <summary>Marks the outage as begun without logging (the caller said so in its own words).</summary>
    public void Begun()
    {
        lock (_gate)
        {
            _failing = true;
        }
    }

    /// <summary>An attempt failed and the next one is <paramref name="delay"/> away.</summary>
    public void Failed(Exception error, int attempt, TimeSpan delay)
    {
        lock (_gate)
        {
            if (!_failing)
            {
                _failing = true;
                Log.OutageStarted(logger, operation, error.Message);
                return;
            }
        }

        Log.Retrying(logger, attempt, operation, delay, error.Message);
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
