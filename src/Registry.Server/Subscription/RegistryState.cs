using System.Collections.Immutable;
using Registry.Model;

namespace Registry.Subscription;

/// <summary>One registered instance as a node holds it in memory.</summary>
internal sealed record Instance(InstanceKey Key, Meta Meta, int TtlSeconds, DateTimeOffset ExpiresAt, long Revision);

/// <summary>An immutable picture of one application's instances, sorted by (protocol, addr) byte-wise.</summary>
internal sealed class ApplicationSnapshot
{
    // Only the loader loop reads these (one thread at a time), so the lazy caches need no lock.
    private long? _maxRevision;
    private DateTimeOffset? _earliestExpiry;

    public ApplicationSnapshot(string application, Instance[] instances)
        : this(application, instances, sorted: false)
    {
    }

    private ApplicationSnapshot(string application, Instance[] instances, bool sorted)
    {
        if (!sorted)
        {
            Array.Sort(instances, static (a, b) => InstanceKey.CompareOrdinal(a.Key, b.Key));
        }

        Application = application;
        Instances = instances;
    }

    public string Application { get; }

    public Instance[] Instances { get; }

    /// <summary>With the count, what the periodic consistency check compares with the database.</summary>
    /// <remarks>
    /// Computed on first use, not per reload: a busy application is re-snapshotted for every
    /// batch that touches it, and scanning all its instances each time showed in profiles.
    /// </remarks>
    public long MaxRevision => _maxRevision ??= Instances.Length == 0 ? 0 : Instances.Max(i => i.Revision);

    /// <summary>When the first of these leases runs out, as loaded.</summary>
    public DateTimeOffset EarliestExpiry => _earliestExpiry ??= Instances.Length == 0 ? DateTimeOffset.MaxValue : Instances.Min(i => i.ExpiresAt);

    /// <summary>Whether the other snapshot shows consumers the same thing (same rows at the same revisions).</summary>
    public bool SameContentAs(ApplicationSnapshot? other) =>
        other is not null && other.Instances.Length == Instances.Length && other.MaxRevision == MaxRevision;

    /// <summary>
    /// This snapshot with the given instances reloaded: each of <paramref name="reloaded"/> is
    /// replaced by its row in <paramref name="rows"/>, or removed when it has none. A large
    /// application changes a few rows at a time, so this finds them by binary search and copies
    /// the ranges in between: no per-instance hashing or comparing.
    /// </summary>
    public ApplicationSnapshot With(IReadOnlyCollection<InstanceKey> reloaded, Instance[] rows)
    {
        var removed = Removed(reloaded);
        Array.Sort(rows, static (a, b) => InstanceKey.CompareOrdinal(a.Key, b.Key));
        var merged = new Instance[Instances.Length - removed.Length + rows.Length];
        var source = 0; // next instance of this snapshot to copy
        var target = 0;
        var skip = 0; // next removed index
        foreach (var row in rows)
        {
            // Where the row goes among the old instances (it is never one of the kept ones).
            var at = IndexOf(row.Key);
            CopyKept(at < 0 ? ~at : at);
            merged[target++] = row;
        }

        CopyKept(Instances.Length);
        return new ApplicationSnapshot(Application, merged, sorted: true);

        // Copies the old instances before index `end`, leaving out the removed ones.
        void CopyKept(int end)
        {
            while (source < end)
            {
                var stop = skip < removed.Length && removed[skip] < end ? removed[skip] : end;
                Array.Copy(Instances, source, merged, target, stop - source);
                target += stop - source;
                source = stop;
                if (stop < end)
                {
                    source++;
                    skip++;
                }
            }
        }
    }

    /// <summary>Where the reloaded keys are now, ascending and each once (a key may be listed twice).</summary>
    private int[] Removed(IReadOnlyCollection<InstanceKey> reloaded)
    {
        var found = new int[reloaded.Count];
        var count = 0;
        foreach (var key in reloaded)
        {
            var index = IndexOf(key);
            if (index >= 0)
            {
                found[count++] = index;
            }
        }

        Array.Sort(found, 0, count);
        var distinct = 0;
        for (var i = 0; i < count; i++)
        {
            if (distinct == 0 || found[i] != found[distinct - 1])
            {
                found[distinct++] = found[i];
            }
        }

        return found[..distinct];
    }

    private int IndexOf(InstanceKey key) => BinarySearch(Instances, key);

    /// <summary>The index of the key, or the bitwise complement of where it would go.</summary>
    private static int BinarySearch(Instance[] instances, InstanceKey key)
    {
        int lo = 0, hi = instances.Length - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            var c = InstanceKey.CompareOrdinal(instances[mid].Key, key);
            if (c == 0)
            {
                return mid;
            }

            if (c < 0)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return ~lo;
    }

    public Instance? Find(InstanceKey key)
    {
        var index = IndexOf(key);
        return index >= 0 ? Instances[index] : null;
    }
}

/// <summary>
/// The whole registry in memory: what every read is served from. Only the
/// <see cref="ChangeFeed.RegistryLoader"/> replaces snapshots (one writer), so readers see
/// an immutable map swapped atomically and never take a lock.
/// </summary>
internal sealed class RegistryState
{
    private ImmutableSortedDictionary<string, ApplicationSnapshot> _applications =
        ImmutableSortedDictionary.Create<string, ApplicationSnapshot>(StringComparer.Ordinal);

    /// <summary>All applications with at least one instance, sorted by name (ordinal).</summary>
    public ImmutableSortedDictionary<string, ApplicationSnapshot> Applications => Volatile.Read(ref _applications);

    public ApplicationSnapshot? Get(string application) =>
        Applications.TryGetValue(application, out var snapshot) ? snapshot : null;

    public Instance? Find(InstanceKey key) => Get(key.Application)?.Find(key);

    /// <summary>Replaces the given applications' snapshots (an empty one removes the application).</summary>
    public void Replace(IEnumerable<ApplicationSnapshot> snapshots)
    {
        var builder = Applications.ToBuilder();
        foreach (var snapshot in snapshots)
        {
            if (snapshot.Instances.Length == 0)
            {
                builder.Remove(snapshot.Application);
            }
            else
            {
                builder[snapshot.Application] = snapshot;
            }
        }

        Volatile.Write(ref _applications, builder.ToImmutable());
    }

    /// <summary>Replaces everything (after a full load).</summary>
    public void ReplaceAll(IEnumerable<ApplicationSnapshot> snapshots)
    {
        var builder = ImmutableSortedDictionary.CreateBuilder<string, ApplicationSnapshot>(StringComparer.Ordinal);
        foreach (var snapshot in snapshots.Where(s => s.Instances.Length > 0))
        {
            builder[snapshot.Application] = snapshot;
        }

        Volatile.Write(ref _applications, builder.ToImmutable());
    }
}
