using System.Collections.Concurrent;
using System.Globalization;
using Registry.Membership;
using Registry.Model;
using Registry.State;
using Registry.Storage;

namespace Registry.ChangeFeed;

/// <summary>
/// This node's write batches from the moment they run until the loader has applied their
/// own notifications. Each batch tags its notifications (see <see cref="Announcement"/>), so
/// a notification is matched to its batch by the tag alone: never by the backend that sent
/// it, which the pool shares with the sweeper and the operating system may reuse.
/// </summary>
internal sealed class OwnCommits(NodeIdentity node)
{
    private readonly ConcurrentDictionary<string, OwnCommit> _pending = new(StringComparer.Ordinal);
    private long _sequence;

    /// <summary>Batches not yet applied (for tests and diagnostics).</summary>
    public int Count => _pending.Count;

    /// <summary>
    /// Registers a batch about to run; its statement sends <see cref="OwnCommit.Tag"/>. It is
    /// pending before the caller sets <see cref="OwnCommit.ReadsApplied"/>: a loader that does
    /// not see it yet when it forgets old read counts (see <see cref="OldestReadsApplied"/>) has
    /// already counted every read it forgets.
    /// </summary>
    public OwnCommit Expect()
    {
        var tag = node.Id + ":" + Interlocked.Increment(ref _sequence).ToString(CultureInfo.InvariantCulture);
        var commit = new OwnCommit(tag);
        _pending[tag] = commit;
        return commit;
    }

    /// <summary>
    /// The lowest <see cref="OwnCommit.ReadsApplied"/> of the pending batches (0 for one still
    /// reading it), or <paramref name="none"/> when no batch is pending.
    /// </summary>
    public long OldestReadsApplied(long none)
    {
        var oldest = none;
        foreach (var commit in _pending.Values)
        {
            oldest = Math.Min(oldest, commit.ReadsApplied);
        }

        return oldest;
    }

    /// <summary>The batch that sent a notification with this tag, counted as received; null for any other notification.</summary>
    public OwnCommit? Receive(string? tag)
    {
        if (tag is null || !_pending.TryGetValue(tag, out var commit) || commit.Expected is { } expected && commit.Received >= expected)
        {
            return null;
        }

        commit.Received++;
        return commit;
    }

    /// <summary>Completes the batches whose notifications have all been loaded, and those that failed (they send none).</summary>
    public void CompleteLoaded()
    {
        foreach (var commit in _pending.Values)
        {
            if (commit.MarkLoaded())
            {
                Complete(commit);
            }
        }
    }

    /// <summary>
    /// Records what a batch changed once its statement returned; the batch is complete at once
    /// when the loader already applied all its notifications (they can arrive before the reply).
    /// </summary>
    /// <returns>False while some of its notifications are still to be loaded.</returns>
    public bool Settle(OwnCommit commit, Dictionary<string, Changes>? changes)
    {
        if (!commit.Settle(changes))
        {
            return false;
        }

        Complete(commit);
        return true;
    }

    /// <summary>After a full load every settled batch is in memory.</summary>
    public void CompleteSettled()
    {
        foreach (var commit in _pending.Values)
        {
            if (commit.Expected is not null)
            {
                Complete(commit);
            }
        }
    }

    /// <summary>
    /// Stops waiting for a batch's notifications (the writer loaded its rows another way: they
    /// were slow, or the feed is down). Should they come, they are read like another node's.
    /// </summary>
    public void Abandon(OwnCommit commit)
    {
        _pending.TryRemove(commit.Tag, out _);
        commit.Applied.TrySetResult();
    }

    private void Complete(OwnCommit commit)
    {
        _pending.TryRemove(commit.Tag, out _);
        commit.Applied.TrySetResult();
    }
}

/// <summary>What one committed batch changed in one application: the keys, and the rows they now have (none for a removed one).</summary>
internal sealed class Changes
{
    public List<InstanceKey> Keys { get; } = [];

    public List<Instance> Rows { get; } = [];

    public void Add(InstanceKey key, Instance? row)
    {
        Keys.Add(key);
        if (row is not null)
        {
            Rows.Add(row);
        }
    }
}

/// <summary>A batch this node runs, until the loader has applied its own notifications.</summary>
internal sealed class OwnCommit(string tag)
{
    private readonly Lock _gate = new();
    private volatile Settlement? _settlement;
    private long _readsApplied;
    private int _loaded;

    /// <summary>Sent in each of the batch's notifications.</summary>
    public string Tag { get; } = tag;

    /// <summary>
    /// The loader's count of applied database reads before the batch ran: a read applied since
    /// may have seen a later write to its rows than the batch's own.
    /// </summary>
    public long ReadsApplied
    {
        get => Volatile.Read(ref _readsApplied);
        set => Volatile.Write(ref _readsApplied, value);
    }

    /// <summary>Its notifications received so far (counted before they are applied); only the loader's loop touches it.</summary>
    public int Received { get; set; }

    /// <summary>How many notifications it sends (one per changed application), once known.</summary>
    public int? Expected => _settlement?.Notifications;

    public TaskCompletionSource Applied { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The rows it left in the application, once known.</summary>
    public Changes? For(string application) => _settlement?.Changes?.GetValueOrDefault(application);

    /// <summary>
    /// <paramref name="changes"/> is null when the batch failed (a rolled-back batch sends nothing);
    /// true when the loader has already applied every notification the batch sends.
    /// </summary>
    public bool Settle(Dictionary<string, Changes>? changes)
    {
        lock (_gate)
        {
            _settlement = new Settlement(changes?.Count ?? 0, changes);
            return _loaded >= _settlement.Notifications;
        }
    }

    /// <summary>
    /// Called by the loader once what it received is applied: true when that is every
    /// notification the batch sends (known once it is settled).
    /// </summary>
    public bool MarkLoaded()
    {
        lock (_gate)
        {
            _loaded = Received;
            return _settlement is { } settled && _loaded >= settled.Notifications;
        }
    }

    private sealed record Settlement(int Notifications, Dictionary<string, Changes>? Changes);
}
