using System.Collections.Concurrent;
using Registry.Model;

namespace Registry.State;

/// <summary>What became of a watched instance.</summary>
internal enum InstanceFate
{
    /// <summary>It is gone from the registry (unregistered, or its lease ran out).</summary>
    Removed,

    /// <summary>A later registration of the same triple took its place (over a session's row any registration does, whatever its meta).</summary>
    Replaced,
}

/// <summary>
/// One held registration's view of its instance (a session's): settles once the in-memory
/// state shows the instance removed, or at another revision than the one it registered. Until
/// memory is known to have caught up with the registration (it was answered once memory had, or
/// memory has shown its revision since), an absence is not taken for a removal nor an older
/// revision for a replacement (the state may still lag the write); after that any other
/// revision is a later write. Before, only a greater one is: revisions come from one sequence,
/// but are drawn before the row is locked, so a later write can carry a smaller one.
/// </summary>
internal sealed class InstanceWatch : IDisposable
{
    private readonly InstanceWatches _owner;
    private readonly long _revision;
    private readonly TaskCompletionSource<InstanceFate> _fate = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Lock _gate = new();
    private bool _seen;

    /// <summary>The newest state checked against (<see cref="RegistryState.Sequence"/>), and what it showed.</summary>
    private long _checked = -1;
    private Instance? _latest;

    internal InstanceWatch(InstanceWatches owner, InstanceKey key, long revision, bool caughtUp)
    {
        _owner = owner;
        Key = key;
        _revision = revision;
        _seen = caughtUp;
    }

    public InstanceKey Key { get; }

    /// <summary>Completes with what became of the instance; never while it stays as registered.</summary>
    public Task<InstanceFate> Fate => _fate.Task;

    /// <summary>
    /// Checks what the state numbered <paramref name="sequence"/> shows. Checks may arrive out of order: the watch's
    /// first one reads the state outside any lock, and the loader may replace it and check first. What an older
    /// state showed can still tell that memory had caught up with the registration (then the newest is judged again,
    /// and an absence in it is a removal), or that a later write took its place; it never undoes what a newer one showed.
    /// </summary>
    internal void Check(long sequence, Instance? now)
    {
        lock (_gate)
        {
            if (sequence >= _checked)
            {
                _checked = sequence;
                _latest = now;
                Settle(now);
            }
            else if (!_seen && now is not null && now.Revision == _revision)
            {
                _seen = true;
                Settle(_latest);
            }
            else if (now is not null && now.Revision > _revision)
            {
                _fate.TrySetResult(InstanceFate.Replaced); // a later write, whatever came of it since
            }
        }
    }

    /// <summary>Under the gate: settles on what the newest state checked shows.</summary>
    private void Settle(Instance? now)
    {
        if (now is null)
        {
            if (_seen)
            {
                _fate.TrySetResult(InstanceFate.Removed);
            }
        }
        else if (now.Revision > _revision || (_seen && now.Revision != _revision))
        {
            _fate.TrySetResult(InstanceFate.Replaced);
        }
        else if (now.Revision == _revision)
        {
            _seen = true;
        }
    }

    public void Dispose() => _owner.Remove(this);
}

/// <summary>
/// The instances held registrations watch, by application, checked by <see cref="RegistryState"/>
/// after each swap of the applications it replaced: a few look-ups per changed application,
/// no query and no timer.
/// </summary>
internal sealed class InstanceWatches
{
    private readonly ConcurrentDictionary<string, WatchSet> _byApplication = new(StringComparer.Ordinal);

    /// <summary>Applications with a watch (for tests and diagnostics).</summary>
    internal int Applications => _byApplication.Count;

    /// <summary>
    /// Watches <paramref name="key"/> as registered at <paramref name="revision"/>, checked against
    /// the state now. <paramref name="caughtUp"/>: memory has already reflected the registration,
    /// so whatever it shows now that differs came after it (a removal or a takeover applied in the
    /// same pass as the registration, before the watch existed).
    /// </summary>
    public InstanceWatch Watch(InstanceKey key, long revision, bool caughtUp, RegistryState state)
    {
        var watch = new InstanceWatch(this, key, revision, caughtUp);
        while (true)
        {
            var set = _byApplication.GetOrAdd(key.Application, _ => new WatchSet());
            lock (set.Gate)
            {
                // A set emptied and retired meanwhile is out of the map, or about to be: take a new one.
                if (!set.Retired)
                {
                    set.Watches.TryAdd(watch, 0);
                    break;
                }
            }
        }

        // After it is listed: a swap from now on checks it too, so no change falls between.
        var (sequence, now) = state.FindNumbered(key);
        watch.Check(sequence, now);
        return watch;
    }

    internal void Remove(InstanceWatch watch)
    {
        if (_byApplication.TryGetValue(watch.Key.Application, out var set))
        {
            lock (set.Gate)
            {
                set.Watches.TryRemove(watch, out _);
                if (set.Watches.IsEmpty && !set.Retired)
                {
                    // Retired under the lock a watch is added under, so none goes into a set
                    // that has left the map: applications come and go (a session per job), and
                    // their empty sets would otherwise stay for the node's lifetime.
                    set.Retired = true;
                    _byApplication.TryRemove(KeyValuePair.Create(watch.Key.Application, set));
                }
            }
        }
    }

    /// <summary>Checks the watches of the applications whose snapshots were just replaced.</summary>
    internal void Changed(IEnumerable<string> applications, RegistryState state, long sequence)
    {
        if (_byApplication.IsEmpty)
        {
            return;
        }

        foreach (var application in applications)
        {
            if (_byApplication.TryGetValue(application, out var set) && !set.Watches.IsEmpty)
            {
                var snapshot = state.Get(application);
                foreach (var watch in set.Watches.Keys)
                {
                    watch.Check(sequence, snapshot?.Find(watch.Key));
                }
            }
        }
    }

    /// <summary>Checks every watch (after the whole state was replaced).</summary>
    internal void ChangedAll(RegistryState state, long sequence) => Changed(_byApplication.Keys, state, sequence);

    /// <summary>One application's watches; retired (under <see cref="Gate"/>) when it empties and leaves the map.</summary>
    private sealed class WatchSet
    {
        public ConcurrentDictionary<InstanceWatch, byte> Watches { get; } = new();

        public Lock Gate { get; } = new();

        public bool Retired { get; set; }
    }
}
