using System.Collections.Immutable;
using Registry.Model;

namespace Registry.State;

/// <summary>
/// The whole registry in memory: what every read is served from. Only the
/// change feed's loader replaces snapshots (one writer), so readers see
/// an immutable map swapped atomically and never take a lock.
/// </summary>
internal sealed class RegistryState
{
    /// <summary>The applications and the number of the replacement that made them, swapped together.</summary>
    private Picture _picture = new(ImmutableSortedDictionary.Create<string, ApplicationSnapshot>(StringComparer.Ordinal), 0);

    /// <summary>UTC ticks of <see cref="StaleSince"/>, 0 for none (a long, so it is read and written whole).</summary>
    private long _staleSinceTicks;

    private long _fullLoads;

    /// <summary>
    /// Since when this picture may lag the database (the change feed is down and reconnecting),
    /// or null while it follows every change; reads say so to their callers.
    /// </summary>
    public DateTimeOffset? StaleSince
    {
        get => Interlocked.Read(ref _staleSinceTicks) is var ticks and not 0 ? new DateTimeOffset(ticks, TimeSpan.Zero) : null;
        set => Interlocked.Exchange(ref _staleSinceTicks, value?.UtcTicks ?? 0);
    }

    /// <summary>
    /// How many full loads have replaced everything. What the node learned beside the change feed (the expiries its own
    /// renewals wrote) counts only within one: the database a full load reads may have lost it (a failover).
    /// </summary>
    public long FullLoads => Interlocked.Read(ref _fullLoads);

    /// <summary>All applications with at least one instance, sorted by name (ordinal).</summary>
    public ImmutableSortedDictionary<string, ApplicationSnapshot> Applications => Volatile.Read(ref _picture).Applications;

    public ApplicationSnapshot? Get(string application) =>
        Applications.TryGetValue(application, out var snapshot) ? snapshot : null;

    public Instance? Find(InstanceKey key) => Get(key.Application)?.Find(key);

    /// <summary>How many times the state has been replaced.</summary>
    public long Sequence => Volatile.Read(ref _picture).Sequence;

    /// <summary>The instance, and the number of the state it was read from (read together: see <see cref="InstanceWatch"/>).</summary>
    public (long Sequence, Instance? Instance) FindNumbered(InstanceKey key)
    {
        var picture = Volatile.Read(ref _picture);
        return (picture.Sequence, picture.Applications.TryGetValue(key.Application, out var snapshot) ? snapshot.Find(key) : null);
    }

    /// <summary>The instances held registrations (sessions) watch; checked after every swap.</summary>
    public InstanceWatches Watches { get; } = new();

    /// <summary>Replaces the given applications' snapshots (an empty one removes the application).</summary>
    public void Replace(IEnumerable<ApplicationSnapshot> snapshots)
    {
        var builder = Applications.ToBuilder();
        foreach (var snapshot in snapshots)
        {
            if (snapshot.Count == 0)
            {
                builder.Remove(snapshot.Application);
            }
            else
            {
                builder[snapshot.Application] = snapshot;
            }
        }

        var sequence = _picture.Sequence + 1;
        Volatile.Write(ref _picture, new Picture(builder.ToImmutable(), sequence));
        Watches.Changed(snapshots.Select(s => s.Application), this, sequence);
    }

    /// <summary>Replaces everything (after a full load).</summary>
    public void ReplaceAll(IEnumerable<ApplicationSnapshot> snapshots)
    {
        var builder = ImmutableSortedDictionary.CreateBuilder<string, ApplicationSnapshot>(StringComparer.Ordinal);
        foreach (var snapshot in snapshots.Where(s => s.Count > 0))
        {
            builder[snapshot.Application] = snapshot;
        }

        // Counted first: what was remembered before it must not outrank a row of the new picture for a moment.
        Interlocked.Increment(ref _fullLoads);
        var sequence = _picture.Sequence + 1;
        Volatile.Write(ref _picture, new Picture(builder.ToImmutable(), sequence));
        Watches.ChangedAll(this, sequence);
    }

    private sealed record Picture(ImmutableSortedDictionary<string, ApplicationSnapshot> Applications, long Sequence);
}
