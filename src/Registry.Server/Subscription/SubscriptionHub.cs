using Registry.Model;
using Registry.Operations;
using Registry.State;

namespace Registry.Subscription;

/// <summary>
/// One distinct subscription and the consumers parked on it. Every consumer of the same
/// subscription shares one answer (computed and serialised once) and one completion signal,
/// so a change costs one recomputation per distinct subscription, not one per consumer.
/// </summary>
internal sealed class SubscriptionView
{
    private readonly Lock _gate = new();
    private Answer _answer;
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public SubscriptionView(string key, IReadOnlyList<SubscriptionEntry> entries, Answer answer)
    {
        Key = key;
        Entries = entries;
        Applications = entries.Select(e => e.Provider).Distinct(StringComparer.Ordinal).ToArray();
        _answer = answer;
    }

    public string Key { get; }

    public IReadOnlyList<SubscriptionEntry> Entries { get; }

    public string[] Applications { get; }

    /// <summary>Consumers holding the view; guarded by the hub's lock.</summary>
    internal int References { get; set; }

    /// <summary>The current answer and a task that completes when it is replaced.</summary>
    public (Answer Answer, Task Changed) Current
    {
        get
        {
            lock (_gate)
            {
                return (_answer, _changed.Task);
            }
        }
    }

    /// <summary>Wakes the parked consumers without a new answer (the node is shutting down).</summary>
    public void Interrupt()
    {
        TaskCompletionSource wake;
        lock (_gate)
        {
            wake = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        wake.TrySetResult();
    }

    /// <summary>Publishes a recomputed answer; wakes the parked consumers only when the version moved.</summary>
    public bool Publish(Answer answer)
    {
        TaskCompletionSource wake;
        lock (_gate)
        {
            if (answer.Version == _answer.Version)
            {
                return false;
            }

            _answer = answer;
            wake = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        wake.TrySetResult();
        return true;
    }
}

/// <summary>
/// Indexes subscription views by their canonical form and by the applications they watch.
/// Views nobody holds are kept until a change touches them (so a consumer that comes straight
/// back finds its view) and then dropped instead of recomputed.
/// </summary>
internal sealed class SubscriptionHub
{
    /// <summary>Unheld views kept at most; beyond it they are dropped at the next acquire.</summary>
    private const int MaxIdleViews = 10_000;

    private readonly RegistryState _state;
    private readonly RegistryMetrics _metrics;
    private readonly Lock _gate = new();
    private readonly Dictionary<string, SubscriptionView> _views = new(StringComparer.Ordinal);
    private readonly Dictionary<string, HashSet<SubscriptionView>> _byApplication = new(StringComparer.Ordinal);
    private int _idle;

    public SubscriptionHub(RegistryState state, RegistryMetrics metrics, IHostApplicationLifetime lifetime)
    {
        _state = state;
        _metrics = metrics;
        // Parked polls are released when the node stops (LongPoll spreads their answers).
        lifetime.ApplicationStopping.Register(InterruptAll);
    }

    /// <summary>Takes a reference to the view of these entries, creating it from the current state.</summary>
    public SubscriptionView Acquire(IReadOnlyList<SubscriptionEntry> entries)
    {
        var key = CanonicalKey(entries);
        lock (_gate)
        {
            if (_views.TryGetValue(key, out var view))
            {
                if (view.References++ == 0)
                {
                    _idle--;
                }

                return view;
            }

            if (_idle > MaxIdleViews)
            {
                DropIdleViews();
            }

            view = new SubscriptionView(key, entries, Answer.Compute(_state, entries)) { References = 1 };
            _views.Add(key, view);
            foreach (var application in view.Applications)
            {
                if (!_byApplication.TryGetValue(application, out var views))
                {
                    _byApplication[application] = views = [];
                }

                views.Add(view);
            }

            _metrics.SubscriptionViews(_views.Count);
            return view;
        }
    }

    public void Release(SubscriptionView view)
    {
        lock (_gate)
        {
            if (--view.References == 0)
            {
                _idle++;
            }
        }
    }

    /// <summary>
    /// Called by the loader after it replaced these applications' snapshots: recomputes each
    /// affected view once and wakes its consumers if their answer changed.
    /// </summary>
    public void ApplicationsChanged(IReadOnlyCollection<string> applications)
    {
        List<SubscriptionView> affected = [];
        lock (_gate)
        {
            var seen = new HashSet<SubscriptionView>(ReferenceEqualityComparer.Instance);
            foreach (var application in applications)
            {
                if (!_byApplication.TryGetValue(application, out var views))
                {
                    continue;
                }

                foreach (var view in views.ToArray())
                {
                    if (!seen.Add(view))
                    {
                        continue;
                    }

                    if (view.References == 0)
                    {
                        Remove(view);
                    }
                    else
                    {
                        affected.Add(view);
                    }
                }
            }

            _metrics.SubscriptionViews(_views.Count);
        }

        foreach (var view in affected)
        {
            if (view.Publish(Answer.Compute(_state, view.Entries)))
            {
                _metrics.AnswerChanged();
            }
        }
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

    private void DropIdleViews()
    {
        foreach (var view in _views.Values.Where(v => v.References == 0).ToArray())
        {
            Remove(view);
        }
    }

    private void Remove(SubscriptionView view)
    {
        _views.Remove(view.Key);
        _idle--;
        foreach (var application in view.Applications)
        {
            if (_byApplication.TryGetValue(application, out var views) && views.Remove(view) && views.Count == 0)
            {
                _byApplication.Remove(application);
            }
        }
    }

    /// <summary>
    /// The subscription's identity whatever the order of its entries or meta pairs: entries
    /// sorted and deduplicated, fields separated by characters that inputs may not contain.
    /// </summary>
    private static string CanonicalKey(IReadOnlyList<SubscriptionEntry> entries)
    {
        var parts = entries.Select(entry =>
        {
            var meta = string.Join('\u0002', entry.Meta.ToArray().Select(p => $"{p.Key}\u0003{p.Value}"));
            return $"{entry.Provider}\u0001{entry.Protocol ?? "\u0004"}\u0001{meta}";
        });
        return string.Join('\u0000', parts.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal));
    }
}
