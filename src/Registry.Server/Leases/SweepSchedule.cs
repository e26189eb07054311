namespace Registry.Leases;

/// <summary>
/// When the next lease can run out, as far as this node knows, so the sweeper costs no
/// statement while nothing can have expired (an idle registry, or one whose leases are all
/// far ahead). Expiries only ever move later except through a write this node loads (a new
/// instance, a shorter TTL), and every load reports its earliest expiry here, so the
/// earliest known expiry is a safe lower bound.
/// </summary>
internal sealed class SweepSchedule
{
    private readonly Lock _gate = new();
    private DateTimeOffset _due = DateTimeOffset.MinValue;

    /// <summary>The earliest expiry reported since the running sweep read the database.</summary>
    private DateTimeOffset _sinceSweepStarted = DateTimeOffset.MaxValue;

    /// <summary>Whether a sweep may find something at <paramref name="now"/> (database time).</summary>
    public bool Due(DateTimeOffset now)
    {
        lock (_gate)
        {
            return now >= _due;
        }
    }

    /// <summary>A lease that ends at <paramref name="expiresAt"/> exists: sweep no later than then.</summary>
    public void Consider(DateTimeOffset expiresAt)
    {
        lock (_gate)
        {
            _due = Min(_due, expiresAt);
            _sinceSweepStarted = Min(_sinceSweepStarted, expiresAt);
        }
    }

    /// <summary>Called before a sweep reads the database.</summary>
    public void SweepStarting()
    {
        lock (_gate)
        {
            _sinceSweepStarted = DateTimeOffset.MaxValue;
        }
    }

    /// <summary>After a sweep that left nothing expired: the earliest remaining expiry it read (null when none).</summary>
    public void SweepFinished(DateTimeOffset? earliest)
    {
        lock (_gate)
        {
            // A lease loaded while the sweep ran may end before what the sweep read.
            _due = Min(earliest ?? DateTimeOffset.MaxValue, _sinceSweepStarted);
        }
    }

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a < b ? a : b;
}
