using Microsoft.Extensions.Options;

namespace Registry.Leases;

/// <summary>
/// The two decisions behind a heartbeat answered from memory, kept apart from the database so
/// that a fake clock can drive them: whether a renewal is worth writing (the skip rule), and
/// whether this node may still answer <c>200</c> (the 503 rule: not once a renewal has waited
/// unrecorded for <see cref="LeaseOptions.UnrecordedShare"/> of the lease, nor once the node
/// has not reached the database for longer than that and a liveness mark, nor while its last
/// attempt to reach it failed).
/// </summary>
internal sealed class RenewalRule(IOptions<LeaseOptions> options, TimeProvider time)
{
    /// <summary>Since when (timestamp ticks) renewals have waited unrecorded; 0 when none waits.</summary>
    private long _unrecordedSince;

    /// <summary>When (timestamp ticks) a flush or liveness mark last reached the database.</summary>
    private long _recordedAt = time.GetTimestamp();

    /// <summary>1 while the last flush or liveness mark failed to reach the database.</summary>
    private int _lastFailed;

    /// <summary>
    /// Whether a renewal of a lease known to end at <paramref name="known"/> must be written at
    /// <paramref name="now"/> (database time). The write is skipped while most of the lease is
    /// still ahead, with a margin of two intervals so a short lease is written before it can run out.
    /// </summary>
    public bool WriteDue(DateTimeOffset known, DateTimeOffset now, TimeSpan ttl) =>
        known - now <= ttl / 2 + 2 * options.Value.RenewalInterval;

    /// <summary>
    /// Whether a renewal of a lease of <paramref name="ttl"/> can be promised now. Refused when
    /// a renewal has waited too long, or when the node has not reached the database for longer
    /// than that and a liveness mark (it marks every interval): a connection that dropped
    /// silently is known before the first renewal waits. Refused at once while the last attempt
    /// failed: a renewal is due when little more than a sixth of the lease may be left in the database
    /// (a provider heartbeating every third of it), so a node that knows it cannot write must
    /// not promise a lease that another node's sweeper would end first; the provider fails over
    /// to a node that can record it.
    /// </summary>
    public bool CanRecord(TimeSpan ttl)
    {
        if (Volatile.Read(ref _lastFailed) != 0)
        {
            return false;
        }

        var limit = UnrecordedLimit(ttl);
        var since = Interlocked.Read(ref _unrecordedSince);
        return (since == 0 || time.GetElapsedTime(since) <= limit)
            && time.GetElapsedTime(Interlocked.Read(ref _recordedAt)) <= limit + options.Value.LivenessInterval + options.Value.RenewalInterval;
    }

    /// <summary>A renewal now waits for the next flush.</summary>
    public void Gathered() => Interlocked.CompareExchange(ref _unrecordedSince, time.GetTimestamp(), 0);

    /// <summary>A flush begins: what is gathered from here on waits for the next one. Returns its start.</summary>
    public long FlushStarting() => time.GetTimestamp();

    /// <summary>The flush begun at <paramref name="started"/> reached the database; <paramref name="more"/> when renewals were gathered meanwhile.</summary>
    public void Recorded(long started, bool more)
    {
        Interlocked.Exchange(ref _unrecordedSince, more ? started : 0);
        Interlocked.Exchange(ref _recordedAt, started);
        Volatile.Write(ref _lastFailed, 0);
    }

    /// <summary>A flush or liveness mark could not reach the database.</summary>
    public void Failed() => Volatile.Write(ref _lastFailed, 1);

    /// <summary>
    /// How long a renewal may wait unrecorded before heartbeats are refused: never less than
    /// a few write intervals or a second, so a busy database's slow flush refuses nobody.
    /// </summary>
    private TimeSpan UnrecordedLimit(TimeSpan ttl) => TimeSpan.FromTicks(Math.Max((long)(ttl.Ticks * options.Value.UnrecordedShare), UnrecordedFloor(options.Value).Ticks));

    /// <summary>The least time a renewal may wait unrecorded before heartbeats are refused, whatever the TTL.</summary>
    internal static TimeSpan UnrecordedFloor(LeaseOptions options) => TimeSpan.FromTicks(Math.Max(4 * options.RenewalInterval.Ticks, TimeSpan.TicksPerSecond));

    /// <summary>
    /// How long after its last liveness mark a node may still answer heartbeats with renewals it
    /// has not written, besides the share of the TTL (see <see cref="CanRecord"/>): its last
    /// successful flush may come up to a liveness interval after that mark.
    /// </summary>
    internal static TimeSpan PromisingAfterMark(LeaseOptions options) => 2 * options.LivenessInterval + options.RenewalInterval;
}
