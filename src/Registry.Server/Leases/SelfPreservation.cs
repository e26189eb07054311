using Microsoft.Extensions.Options;
using Registry.Telemetry;

namespace Registry.Leases;

/// <summary>
/// Decides how many expired instances a sweep may evict. Normally all of them. When more than
/// <see cref="LeaseOptions.SelfPreservationShare"/> of the live instances and more than
/// <see cref="LeaseOptions.SelfPreservationMinInstances"/> would be evicted within one
/// <see cref="LeaseOptions.SelfPreservationWindow"/>, eviction is rate-limited to that share
/// per window instead of stopped: a real mass death still drains (a fraction f of the fleet
/// within about ln(1-f)/ln(1-share) windows: 90% in 15 minutes with the defaults), while a
/// registry-side fault is covered by <see cref="LeaseGrace"/> and evicts nobody. The window's
/// evictions are counted in the database (<c>evictions</c>), so the budget holds for the
/// cluster whichever node sweeps.
/// </summary>
internal sealed partial class SelfPreservation(
    IOptions<LeaseOptions> options,
    RegistryMetrics metrics,
    ILogger<SelfPreservation> logger)
{
    private volatile bool _engaged;

    public bool Engaged => _engaged;

    /// <summary>Expired instances seen at the last sweep (for /readyz).</summary>
    public int LastExpired { get; private set; }

    /// <summary>
    /// Evictions allowed now, given the live and expired counts and how many the cluster
    /// evicted within the window.
    /// </summary>
    public int Budget(int live, int expired, int recentlyEvicted)
    {
        var settings = options.Value;
        LastExpired = expired;
        var population = live + recentlyEvicted;
        var wouldEvict = recentlyEvicted + expired;
        var allowedPerWindow = Math.Max((int)(settings.SelfPreservationShare * population), settings.SelfPreservationMinInstances);
        var engage = expired > 0 && wouldEvict > settings.SelfPreservationShare * population && wouldEvict > settings.SelfPreservationMinInstances;
        if (engage != _engaged)
        {
            _engaged = engage;
            metrics.SelfPreservation(engage);
            if (engage)
            {
                LogEngaged(logger, wouldEvict, population, allowedPerWindow, settings.SelfPreservationWindow);
            }
            else
            {
                LogReleased(logger);
            }
        }

        return engage ? Math.Max(0, allowedPerWindow - recentlyEvicted) : int.MaxValue;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Self-preservation engaged: {WouldEvict} of {Live} instances would be evicted within the window; evicting at most {Allowed} per {Window}")]
    private static partial void LogEngaged(ILogger logger, int wouldEvict, int live, int allowed, TimeSpan window);

    [LoggerMessage(Level = LogLevel.Information, Message = "Self-preservation released: evictions are back to normal")]
    private static partial void LogReleased(ILogger logger);
}
