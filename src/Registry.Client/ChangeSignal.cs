using Microsoft.Extensions.Logging;

namespace Registry.Client;

/// <summary>Fires the source behind handed-out change tokens without letting their callbacks stop the caller.</summary>
internal static class ChangeSignal
{
    /// <summary>
    /// Cancels <paramref name="source"/>: every callback runs, and what any of them threw is
    /// logged rather than thrown, so one app's faulty callback neither skips the rest of the
    /// change's delivery nor reaches the poll loop as an outage.
    /// </summary>
    public static void Fire(CancellationTokenSource source, ILogger logger)
    {
        try
        {
            source.Cancel();
        }
        catch (AggregateException e)
        {
            Log.ChangeCallbackFailed(logger, e);
        }
    }
}
