// Over 300 lines on purpose: fragments, views and the hub share one lock and the rule that a change is composed once per distinct subscription.
using System.Diagnostics;
using Microsoft.Extensions.Options;
using Registry.Model;
using Registry.State;
using Registry.Telemetry;

namespace Registry.Subscription;

/// <summary>
/// One (application, entries naming it) pair that subscriptions share: its fragment is
/// computed once per change of the application, whatever the number of subscriptions that
/// include it.
/// </summary>
internal sealed class FragmentSlot(string key, string application, SubscriptionEntry[] entries, Fragment fragment)
{
    public string Key { get; } = key;

    public string Application { get; } = application;

    public SubscriptionEntry[] Entries { get; } = entries;

    /// <summary>Replaced (never changed) by the hub under its lock.</summary>
    public Fragment Current { get; set; } = fragment;

    /// <summary>The views that include it; guarded by the hub's lock.</summary>
    public HashSet<SubscriptionView> Views { get; } = new(ReferenceEqualityComparer.Instance);
}

/// <summary>
/// One distinct subscription and the consumers parked on it. Every consumer of the same
/// subscription shares one answer (composed once from its fragments) and one completion
/// signal, so a change costs one composition per distinct subscription, not one per consumer.
/// </summary>
internal sealed class SubscriptionView
{
    private readonly Lock _gate = new();
    private Answer _answer;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Shutdown has woken its consumers: none parks any more.</summary>
    private bool _interrupted;

    /// <summary>Set while a change applied to the registry is not yet in the answer: completes once it is.</summary>
    private Task? _recomposed;

    /// <summary>The consumers waiting on the current answer (so all hold its version); guarded by the gate.</summary>
    private readonly HashSet<ParkedConsumer> _parked = new(ReferenceEqualityComparer.Instance);

    public SubscriptionView(string key, FragmentSlot[] slots)
    {
        Key = key;
        Slots = slots;
        IdleEntry = new(this);
        _answer = Compose();
    }

    public string Key { get; }

    /// <summary>One per application named, in ordinal order of application.</summary>
    public FragmentSlot[] Slots { get; }

    /// <summary>Consumers holding the view; guarded by the hub's lock.</summary>
    internal int References { get; set; }

    /// <summary>When the last consumer let it go (a timestamp); guarded by the hub's lock.</summary>
    internal long IdleSince { get; set; }

    /// <summary>Its place in the hub's list of idle views (linked there only while nobody holds it); guarded by the hub's lock.</summary>
    internal LinkedListNode<SubscriptionView> IdleEntry { get; }

    /// <summary>The current answer (<see cref="Park"/> gives the signal of its replacement).</summary>
    public Answer Current
    {
        get
        {
            lock (_gate)
            {
                return _answer;
            }
        }
    }

    /// <summary>
    /// The answer with every change the node has applied (and so every write it acknowledged):
    /// the current one, or the next once a pending recomposition publishes it.
    /// </summary>
    public async ValueTask<Answer> FreshAsync(CancellationToken cancellationToken)
    {
        Task? recomposed;
        lock (_gate)
        {
            recomposed = _recomposed;
            if (recomposed is null)
            {
                return _answer;
            }
        }

        await recomposed.WaitAsync(cancellationToken);
        return Current;
    }

    /// <summary>A change to one of its fragments is applied and not yet in the answer; <paramref name="recomposed"/> completes once it is.</summary>
    public void MarkStale(Task recomposed)
    {
        lock (_gate)
        {
            _recomposed = recomposed;
        }
    }

    /// <summary>How many consumers are parked on the current answer now, and its version.</summary>
    public (int Parked, string Version) ParkedOn
    {
        get
        {
            lock (_gate)
            {
                return (_parked.Count, _answer.Version);
            }
        }
    }

    /// <summary>
    /// Parks the consumer on the current answer when it holds that <paramref name="version"/>:
    /// the task completes when the answer is replaced. Null when the answer already moved on,
    /// or the node's shutdown has already woken this view's consumers (nothing would wake it).
    /// </summary>
    public Task? Park(ParkedConsumer consumer, string version)
    {
        lock (_gate)
        {
            if (_interrupted || !string.Equals(version, _answer.Version, StringComparison.Ordinal))
            {
                return null;
            }

            _parked.Add(consumer);
            return _changed.Task;
        }
    }

    /// <summary>The consumer stopped waiting (its wait ran out or it left) before the answer changed.</summary>
    public void Unpark(ParkedConsumer consumer)
    {
        lock (_gate)
        {
            _parked.Remove(consumer);
        }
    }

    /// <summary>The answer of the slots' current fragments.</summary>
    public Answer Compose()
    {
        var fragments = new Fragment[Slots.Length];
        for (var i = 0; i < fragments.Length; i++)
        {
            fragments[i] = Slots[i].Current;
        }

        return Answer.Compose(fragments);
    }

    /// <summary>Wakes the parked consumers without a new answer (the node is shutting down).</summary>
    public void Interrupt()
    {
        TaskCompletionSource wake;
        lock (_gate)
        {
            wake = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _parked.Clear();
            _interrupted = true;
        }

        wake.TrySetResult();
    }

    /// <summary>
    /// Publishes a recomposed answer (every read from now on gets it, and it is no longer stale)
    /// and returns the signal that wakes the consumers parked on the old one, or null when the
    /// version did not move. <paramref name="parked"/> gets those consumers when asked for.
    /// </summary>
    public TaskCompletionSource? Publish(Answer answer, bool listParked, out ParkedConsumer[] parked)
    {
        lock (_gate)
        {
            parked = [];
            _recomposed = null;
            var moved = answer.Version != _answer.Version;
            // Taken even when its version did not move (the same bytes, serialised again after a TTL or holder changed):
            // its fragments are the ones counted in the node's bytes, the old answer's were let go.
            _answer = answer;
            if (!moved)
            {
                return null;
            }

            var wake = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (listParked)
            {
                parked = [.. _parked];
            }

            _parked.Clear();
            return wake;
        }
    }
}

/// <summary>A distinct subscription beyond <see cref="LimitsOptions.MaxSubscriptions"/>: answer 429.</summary>
internal sealed class TooManySubscriptionsException(string message) : Exception(message);

/// <summary>
/// Indexes subscription views by their canonical form, and the fragments they are composed of
/// by application. A change recomputes each fragment of the application once, then recomposes
/// the views that include them (hashing a few fragment hashes each). Views nobody holds are
/// kept (so a consumer that comes straight back finds its view) until a change touches them,
/// which drops them instead of recomputing them, or for <see cref="SubscriptionOptions.KeepIdleFor"/>;
/// a fragment goes with its last view.
/// </summary>
internal sealed class SubscriptionHub
{
    private readonly RegistryState _state;
    private readonly RegistryMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly int _maxViews;
    private readonly long _maxCharacters;
    private readonly long _maxBytes;
    private readonly long _keepIdleTicks;
    private readonly IChangeWitness[] _witnesses;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, SubscriptionView> _views = new(StringComparer.Ordinal);
    private readonly Dictionary<string, FragmentSlot> _slots = new(StringComparer.Ordinal);
    private readonly Dictionary<string, HashSet<FragmentSlot>> _byApplication = new(StringComparer.Ordinal);

    /// <summary>
    /// The views nobody holds, in the order they went idle: a view is linked when its last
    /// consumer lets it go and unlinked when it is held again or removed (its own node, so
    /// neither allocates), and the oldest is first.
    /// </summary>
    private readonly LinkedList<SubscriptionView> _idle = new();

    /// <summary>The characters of the keys of the views held: what they name, each held about three times (key, slot keys, entries).</summary>
    private long _characters;

    /// <summary>The bytes of the segments the held fragments keep, each counted once (see <see cref="Fragment.Hold"/>).</summary>
    private long _bytes;

    /// <summary>Views being made outside the lock (see <see cref="Acquire"/>), and their keys' characters: counted against the limits as if held.</summary>
    private int _makingViews;

    private long _makingCharacters;

    /// <summary>The change applied and not yet recomposed: its applications, fragments, and the signal of its end.</summary>
    private readonly HashSet<string> _changed = new(StringComparer.Ordinal);
    private readonly HashSet<FragmentSlot> _stale = new(ReferenceEqualityComparer.Instance);
    private TaskCompletionSource? _recomposed;

    public SubscriptionHub(
        RegistryState state, RegistryMetrics metrics, IOptions<LimitsOptions> limits, IOptions<SubscriptionOptions> options, TimeProvider time,
        IHostApplicationLifetime lifetime, IEnumerable<IChangeWitness> witnesses)
    {
        _state = state;
        _witnesses = witnesses.ToArray();
        _metrics = metrics;
        _time = time;
        _maxViews = limits.Value.MaxSubscriptions;
        _maxCharacters = limits.Value.MaxSubscriptionCharacters;
        _maxBytes = limits.Value.MaxSubscriptionBytes;
        _keepIdleTicks = (long)(options.Value.KeepIdleFor.TotalSeconds * time.TimestampFrequency);
        // Parked polls are released when the node stops (LongPoll spreads their answers).
        lifetime.ApplicationStopping.Register(InterruptAll);
    }

    /// <summary>Takes a reference to the view of these entries, creating it from the current state.</summary>
    /// <exception cref="TooManySubscriptionsException">The node holds as many distinct subscriptions as it may.</exception>
    public SubscriptionView Acquire(IReadOnlyList<SubscriptionEntry> entries)
    {
        (string Application, SubscriptionEntry[] Entries)[] groups;
        string[] slotKeys;
        string key;
        if (entries.Count == 1)
        {
            // The common case (every GET /v1/services/{application}), without the grouping.
            key = EntryKey(entries[0]);
            groups = [(entries[0].Provider, [entries[0]])];
            slotKeys = [key];
        }
        else
        {
            groups = entries
                .GroupBy(e => e.Provider, StringComparer.Ordinal)
                .OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => (Application: g.Key, Entries: g.DistinctBy(EntryKey, StringComparer.Ordinal).OrderBy(EntryKey, StringComparer.Ordinal).ToArray()))
                .ToArray();
            slotKeys = groups.Select(g => string.Join('\u0000', g.Entries.Select(EntryKey))).ToArray();
            key = string.Join('\u0005', slotKeys);
        }

        // The fragments of selections no view holds yet are computed outside the lock (as Recompose computes them): on a
        // large application that is a scan and a serialisation, and every poll, release and change waits for this lock.
        bool[] missing;
        ApplicationSnapshot?[] seen;
        Fragment?[] donors;
        lock (_gate)
        {
            if (_idle.First is not null)
            {
                DropLongIdleViews(_time.GetTimestamp());
            }

            if (Held(key) is { } held)
            {
                return held;
            }

            // Only for a view to make: every poll of one already held passes through here.
            (missing, seen, donors) = (new bool[groups.Length], new ApplicationSnapshot?[groups.Length], new Fragment?[groups.Length]);

            // Bounded by count and by size: a subscription may name 64 providers with 64 long meta pairs each, and
            // select a different few of the instances of each (by per-instance meta), which no other subscription shares.
            if (_views.Count + _makingViews >= _maxViews || _characters + _makingCharacters + key.Length > _maxCharacters || _bytes >= _maxBytes)
            {
                // One that alone passes the size would never fit: no idle view is dropped for it.
                if (key.Length > _maxCharacters)
                {
                    _metrics.LimitReached("subscription_characters");
                    throw new TooManySubscriptionsException(
                        $"This subscription alone names {key.Length} characters, more than this node's limit (Registry:Limits:MaxSubscriptionCharacters).");
                }

                DropIdleViews();
                if (_views.Count + _makingViews >= _maxViews)
                {
                    _metrics.LimitReached("subscriptions");
                    throw new TooManySubscriptionsException(
                        $"This node holds {_views.Count} distinct subscriptions, its limit (Registry:Limits:MaxSubscriptions); retry shortly or on another node.");
                }

                if (_characters + _makingCharacters + key.Length > _maxCharacters)
                {
                    _metrics.LimitReached("subscription_characters");
                    throw new TooManySubscriptionsException(
                        $"The distinct subscriptions this node holds name {_characters} characters, and this one {key.Length} more than its limit " +
                        "allows (Registry:Limits:MaxSubscriptionCharacters); retry shortly or on another node.");
                }

                // Checked before the new one is computed: the bytes held pass the limit by the subscriptions being made at
                // that moment at most. One made only of selections already held (another combination of them) keeps no byte more.
                if (_bytes >= _maxBytes && slotKeys.Any(k => !_slots.ContainsKey(k)))
                {
                    _metrics.LimitReached("subscription_bytes");
                    throw new TooManySubscriptionsException(
                        $"The distinct subscriptions this node holds keep {_bytes} bytes of endpoints, its limit " +
                        "(Registry:Limits:MaxSubscriptionBytes); retry shortly or on another node.");
                }
            }

            for (var i = 0; i < groups.Length; i++)
            {
                if (!_slots.ContainsKey(slotKeys[i]))
                {
                    missing[i] = true;
                    seen[i] = _state.Get(groups[i].Application);
                    donors[i] = Donor(groups[i].Application);
                }
            }

            // Counted against the limits while it is made, so requests made at once cannot pass them together.
            _makingViews++;
            _makingCharacters += key.Length;
        }

        var computed = new Fragment?[groups.Length];
        try
        {
            for (var i = 0; i < groups.Length; i++)
            {
                if (missing[i])
                {
                    computed[i] = Fragment.Compute(seen[i], groups[i].Entries, donor: donors[i]);
                }
            }
        }
        catch
        {
            lock (_gate)
            {
                DoneMaking(key);
            }

            throw;
        }

        lock (_gate)
        {
            DoneMaking(key);
            return Made(key, groups, slotKeys, seen, computed);
        }
    }

    /// <summary>A view of <paramref name="key"/> is no longer being made (made, or given up); under the lock.</summary>
    private void DoneMaking(string key)
    {
        _makingViews--;
        _makingCharacters -= key.Length;
    }

    /// <summary>Another selection's fragment of the application, whose segments of the same instances a new one shares rather than serialising them again; under the lock.</summary>
    private Fragment? Donor(string application) =>
        _byApplication.GetValueOrDefault(application)?.MaxBy(other => other.Current.Count)?.Current;

    /// <summary>
    /// The view of <paramref name="key"/>: another request's made meanwhile, or a new one of the slots held and of new
    /// ones (each from its fragment computed outside the lock, if the application's snapshot is still the one it was
    /// computed from; else again now, from that fragment); under the lock. Computes before it changes anything, so a
    /// computation that throws leaves no slot behind.
    /// </summary>
    private SubscriptionView Made(string key, (string Application, SubscriptionEntry[] Entries)[] groups, string[] slotKeys,
        ApplicationSnapshot?[] seen, Fragment?[] computed)
    {
        if (Held(key) is { } held)
        {
            return held;
        }

        var fragments = new Fragment?[groups.Length];
        for (var i = 0; i < groups.Length; i++)
        {
            if (!_slots.ContainsKey(slotKeys[i]))
            {
                var (application, slotEntries) = groups[i];
                var now = _state.Get(application);
                fragments[i] = computed[i] is { } early && ReferenceEquals(seen[i], now)
                    ? early
                    : Fragment.Compute(now, slotEntries, previous: computed[i], donor: Donor(application));
            }
        }

        var slots = new FragmentSlot[groups.Length];
        for (var i = 0; i < groups.Length; i++)
        {
            if (!_slots.TryGetValue(slotKeys[i], out var slot))
            {
                var (application, slotEntries) = groups[i];
                if (!_byApplication.TryGetValue(application, out var applicationSlots))
                {
                    _byApplication[application] = applicationSlots = [];
                }

                slot = new FragmentSlot(slotKeys[i], application, slotEntries, fragments[i]!);
                slot.Current.Hold(ref _bytes);
                _slots.Add(slot.Key, slot);

                applicationSlots.Add(slot);
            }

            slots[i] = slot;
        }

        var view = new SubscriptionView(key, slots) { References = 1 };
        if (_recomposed is not null && slots.Any(_stale.Contains))
        {
            view.MarkStale(_recomposed.Task);
        }

        _views.Add(key, view);
        _characters += key.Length;
        foreach (var slot in slots)
        {
            slot.Views.Add(view);
        }

        _metrics.SubscriptionViews(_views.Count);
        _metrics.SubscriptionBytes(_bytes);
        return view;
    }

    /// <summary>The view of <paramref name="key"/>, if there is one, with one holder more; under the lock.</summary>
    private SubscriptionView? Held(string key)
    {
        if (!_views.TryGetValue(key, out var view))
        {
            return null;
        }

        if (view.References++ == 0)
        {
            _idle.Remove(view.IdleEntry);
        }

        return view;
    }

    public void Release(SubscriptionView view)
    {
        lock (_gate)
        {
            var now = _time.GetTimestamp();
            if (--view.References == 0)
            {
                view.IdleSince = now;
                _idle.AddLast(view.IdleEntry);
            }

            DropLongIdleViews(now);
        }
    }

    /// <summary>Drops the views nobody has held for <see cref="SubscriptionOptions.KeepIdleFor"/>; under the lock.</summary>
    private void DropLongIdleViews(long now)
    {
        var dropped = false;
        while (_idle.First is { } oldest && now - oldest.Value.IdleSince >= _keepIdleTicks)
        {
            Remove(oldest.Value);
            dropped = true;
        }

        if (dropped)
        {
            _metrics.SubscriptionViews(_views.Count);
        }
    }

    /// <summary>
    /// Called by the loader after it replaced these applications' snapshots: marks the views
    /// that include them stale (reads wait for their next answer) and drops the idle ones. It
    /// computes nothing, so the loader answers the writes that caused the change at once and
    /// then <see cref="Recompose"/>s.
    /// </summary>
    public void ApplicationsChanged(IReadOnlyCollection<string> applications)
    {
        lock (_gate)
        {
            _changed.UnionWith(applications);
            foreach (var application in applications)
            {
                if (!_byApplication.TryGetValue(application, out var slots))
                {
                    continue;
                }

                foreach (var slot in slots.ToArray())
                {
                    // Idle views touched by the change go (and fragments nobody else includes with them).
                    foreach (var view in slot.Views.Where(v => v.References == 0).ToArray())
                    {
                        Remove(view);
                    }

                    if (slot.Views.Count > 0 && _stale.Add(slot))
                    {
                        _recomposed ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                        foreach (var view in slot.Views)
                        {
                            view.MarkStale(_recomposed.Task);
                        }
                    }
                }
            }

            _metrics.SubscriptionViews(_views.Count);
        }
    }

    /// <summary>
    /// Recomputes each stale fragment once, then recomposes the views that include them. Reads
    /// get the new answers at once; the consumers parked on the old ones are woken by the
    /// signals added to <paramref name="wakes"/>, which the loader sets next.
    /// </summary>
    public void Recompose(List<TaskCompletionSource> wakes)
    {
        FragmentSlot[] touched;
        string[] applications;
        TaskCompletionSource? recomposed;
        lock (_gate)
        {
            touched = _stale.Where(slot => slot.Views.Count > 0).ToArray();
            applications = [.. _changed];
            recomposed = _recomposed;
            _changed.Clear();
        }

        if (applications.Length == 0)
        {
            return;
        }

        var started = Stopwatch.GetTimestamp();
        try
        {
            var records = _witnesses.Select(w => w.Begin(applications)).OfType<IChangeRecord>().ToArray();
            // Outside the lock: the state was replaced before the change was marked, so a view
            // created meanwhile computed its new fragments, or shares a stale one and is
            // recomposed below.
            var fragments = new Fragment[touched.Length];
            // Largest first: each application's first new fragment is offered to its other selections, so segments a
            // change serialised again stay shared between them (or each would keep a copy of its own).
            var donors = new Dictionary<string, Fragment>(StringComparer.Ordinal);
            foreach (var i in Enumerable.Range(0, touched.Length).OrderByDescending(i => touched[i].Current.Count))
            {
                var slot = touched[i];
                fragments[i] = Fragment.Compute(_state.Get(slot.Application), slot.Entries, slot.Current, donors.GetValueOrDefault(slot.Application));
                donors.TryAdd(slot.Application, fragments[i]);
            }

            var affected = new HashSet<SubscriptionView>(ReferenceEqualityComparer.Instance);
            lock (_gate)
            {
                for (var i = 0; i < touched.Length; i++)
                {
                    var slot = touched[i];
                    if (ReferenceEquals(_slots.GetValueOrDefault(slot.Key), slot))
                    {
                        // Held before the old one is let go: the segments they share stay counted.
                        fragments[i].Hold(ref _bytes);
                        slot.Current.Release(ref _bytes);
                    }

                    slot.Current = fragments[i];
                    affected.UnionWith(slot.Views);
                }

                _metrics.SubscriptionBytes(_bytes);

                _stale.Clear();
                _recomposed = null;
            }

            foreach (var view in affected)
            {
                if (view.Publish(view.Compose(), records.Length > 0, out var parked) is { } wake)
                {
                    wakes.Add(wake);
                    _metrics.AnswerChanged();
                    foreach (var record in records)
                    {
                        record.Replaced(view, parked);
                    }
                }
            }

            if (touched.Length > 0)
            {
                _metrics.AnswersRecomputed(Stopwatch.GetElapsedTime(started));
            }

            foreach (var record in records)
            {
                record.End();
            }
        }
        finally
        {
            // Also when a computation failed: reads then get the last answer rather than wait forever.
            recomposed?.TrySetResult();
        }
    }

    /// <summary>The consumers parked on subscriptions that include the application, per version they hold.</summary>
    public Dictionary<string, int> Watchers(string application)
    {
        SubscriptionView[] views;
        lock (_gate)
        {
            views = _byApplication.TryGetValue(application, out var slots)
                ? slots.SelectMany(slot => slot.Views).Distinct(ReferenceEqualityComparer.Instance).Cast<SubscriptionView>().ToArray()
                : [];
        }

        var versions = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var view in views)
        {
            // Read together, so the count belongs to the version.
            var (parked, version) = view.ParkedOn;
            if (parked > 0)
            {
                versions[version] = versions.GetValueOrDefault(version) + parked;
            }
        }

        return versions;
    }

    private void InterruptAll()
    {
        SubscriptionView[] views;
        lock (_gate)
        {
            views = _views.Values.ToArray();
        }

        foreach (var view in views)
        {
            view.Interrupt();
        }
    }

    /// <summary>
    /// Drops every view nobody holds; under the lock. They are the idle list (a view goes on it when its last holder
    /// lets go, and off it when it is held again or dropped), so a node whose views are all held, at its limit, pays
    /// nothing here for each subscription it refuses, rather than a look at every view.
    /// </summary>
    private void DropIdleViews()
    {
        while (_idle.First is { } oldest)
        {
            Remove(oldest.Value);
        }
    }

    /// <summary>Drops a view nobody holds (and the fragments only it included); under the lock.</summary>
    private void Remove(SubscriptionView view)
    {
        if (!_views.Remove(view.Key))
        {
            return;
        }

        _characters -= view.Key.Length;
        if (view.IdleEntry.List is not null)
        {
            _idle.Remove(view.IdleEntry);
        }

        foreach (var slot in view.Slots)
        {
            if (slot.Views.Remove(view) && slot.Views.Count == 0)
            {
                _slots.Remove(slot.Key);
                slot.Current.Release(ref _bytes);
                _metrics.SubscriptionBytes(_bytes);
                if (_byApplication.TryGetValue(slot.Application, out var slots) && slots.Remove(slot) && slots.Count == 0)
                {
                    _byApplication.Remove(slot.Application);
                }
            }
        }
    }

    /// <summary>
    /// An entry's identity whatever the order of its meta pairs, in fields separated by
    /// characters that inputs may not contain; a subscription is its entries' keys sorted and
    /// deduplicated, grouped by provider.
    /// </summary>
    private static string EntryKey(SubscriptionEntry entry)
    {
        var meta = entry.Meta.Count == 0 ? "" : string.Join('\u0002', entry.Meta.ToArray().Select(p => $"{p.Key}\u0003{p.Value}"));
        return $"{entry.Provider}\u0001{entry.Protocol ?? "\u0004"}\u0001{meta}";
    }
}
