using System.Diagnostics.Metrics;
using Registry.Telemetry;

namespace Registry.Sessions;

/// <summary>How a session ended.</summary>
internal enum SessionEnd
{
    /// <summary>The connection closed (the provider left or crashed, or a keep-alive could not be written): the instance is removed.</summary>
    Closed,

    /// <summary>Unregistered by other means: told to the provider with an <c>ended</c> event.</summary>
    Unregistered,

    /// <summary>Its lease ran out and the sweeper removed it: told with an <c>ended</c> event.</summary>
    Evicted,

    /// <summary>A newer registration of the same instance took over: told with an <c>ended</c> event.</summary>
    Replaced,

    /// <summary>This node stops, or cannot record renewals: the stream closes and the lease is left to run (the provider opens its session elsewhere).</summary>
    Released,

    /// <summary>The credential that opened it was revoked or expired: the stream closes and the lease is left to run out.</summary>
    Unauthorized,
}

/// <summary>The session instruments (meter <c>Registry</c>): sessions open now, and how they ended.</summary>
internal sealed class SessionMetrics
{
    private readonly UpDownCounter<long> _open;
    private readonly Counter<long> _ended;

    public SessionMetrics(IMeterFactory meters)
    {
        var meter = meters.Create(RegistryMetrics.MeterName);
        _open = meter.CreateUpDownCounter<long>("registry.sessions.open", "{session}", "Sessions held open now.");
        _ended = meter.CreateCounter<long>("registry.sessions.ended", "{session}",
            "Sessions ended, by reason (closed, unregistered, evicted, replaced, released, unauthorized).");
    }

    public void Opened() => _open.Add(1);

    public void Ended(SessionEnd end)
    {
        _open.Add(-1);
        _ended.Add(1, new KeyValuePair<string, object?>("reason", Reason(end)));
    }

    public static string Reason(SessionEnd end) => end.ToString().ToLowerInvariant();
}
