using Microsoft.Extensions.Options;
using Registry.ChangeFeed;
using Registry.Membership;
using Registry.Model;
using Registry.State;
using Registry.Subscription;

namespace Registry.Drain;

/// <summary>
/// A node's side of a drain. The question arrives (through the drain channel) before the
/// removal it is about, since it is committed first; so when this node applies the removal,
/// it records the consumers that were parked on every answer that held the instance, follows
/// each until its answer without the instance has been written, and reports how many are
/// delivered and pending: once the removal is applied, while they finish (at most once a
/// <see cref="DrainOptions.ReportInterval"/>), and at once when none is left pending. A node
/// that never held the instance reports nothing pending once it has applied what was
/// announced before the question.
/// </summary>
internal sealed class DrainTracker(
    RegistryState state,
    DrainMessenger messenger,
    NodeIdentity node,
    IOptions<DrainOptions> options,
    TimeProvider time) : IChangeWitness
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Interest> _interests = new(StringComparer.Ordinal);

    /// <summary>
    /// Starts following the removal of <paramref name="key"/> for drain <paramref name="id"/>
    /// (again is a no-op: the asking node hears its own question too). Must run before the
    /// removal's notification is handed to the loader, as the change feed's handler does.
    /// </summary>
    public void Asked(string id, int seconds, InstanceKey key, RegistryLoader loader)
    {
        Interest interest;
        lock (_gate)
        {
            var now = time.GetUtcNow();
            foreach (var expired in _interests.Values.Where(i => i.Expires < now).ToArray())
            {
                Forget(expired);
            }

            if (_interests.ContainsKey(id))
            {
                return;
            }

            interest = new Interest(id, key, now + TimeSpan.FromSeconds(seconds + 1)) { LastKnown = state.Find(key) };
            _interests.Add(id, interest);
        }

        if (interest.LastKnown is null)
        {
            // Not held here as far as this node knows; once what was announced before the
            // question is applied, it knows for sure.
            // Only once it did catch up: after a failed load it does not know, and says nothing (an incomplete drain).
            _ = loader.CaughtUpAsync().ContinueWith(_ => CaughtUp(interest), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
        }
    }

    public IChangeRecord? Begin(IReadOnlyCollection<string> applications)
    {
        List<Interest>? removed = null;
        lock (_gate)
        {
            foreach (var interest in _interests.Values)
            {
                if (interest.Seen || !applications.Contains(interest.Key.Application))
                {
                    continue;
                }

                if (state.Find(interest.Key) is { } now)
                {
                    interest.LastKnown = now; // (re-)registered meanwhile: match on what it is now
                }
                else if (interest.LastKnown is not null)
                {
                    (removed ??= []).Add(interest);
                }
            }
        }

        return removed is null ? null : new Record(this, removed);
    }

    private void CaughtUp(Interest interest)
    {
        lock (_gate)
        {
            if (interest.Seen || interest.LastKnown is not null)
            {
                return; // the removal is (or will be) seen by the loader
            }

            // Caught up, the loader may have applied the registration and not yet told Begin
            // (it answers writes first): then it is held here after all, and its removal is followed.
            if (state.Find(interest.Key) is { } now)
            {
                interest.LastKnown = now;
                return;
            }

            interest.Seen = true;
        }

        Follow(interest, []);
    }

    /// <summary>Starts counting the consumers recorded at the removal, then reports.</summary>
    private void Follow(Interest interest, List<ParkedConsumer> consumers)
    {
        lock (interest)
        {
            interest.Pending = consumers.Count;
        }

        foreach (var consumer in consumers)
        {
            if (!consumer.Watch(finished => Finished(interest, finished)))
            {
                Finished(interest, consumer);
            }
        }

        lock (interest)
        {
            Report(interest);
        }
    }

    private void Finished(Interest interest, ParkedConsumer consumer)
    {
        lock (interest)
        {
            interest.Pending--;
            if (consumer.Sent)
            {
                interest.Delivered++;
            }

            if (interest.Pending == 0)
            {
                Report(interest);
            }
            else if (interest.Throttle is null)
            {
                interest.Throttle = time.CreateTimer(_ => Progress(interest), null, options.Value.ReportInterval, Timeout.InfiniteTimeSpan);
            }
        }
    }

    private void Progress(Interest interest)
    {
        lock (interest)
        {
            Interlocked.Exchange(ref interest.Throttle, null)?.Dispose();
            Report(interest);
        }
    }

    /// <summary>Posts the counts (under the interest's lock, so reports leave in order); the last one forgets the interest.</summary>
    private void Report(Interest interest)
    {
        if (interest.Done)
        {
            return;
        }

        messenger.Post(DrainMessages.ReplyChannel(interest.Id), DrainMessages.Report(interest.Id, node.Id, interest.Delivered, interest.Pending));
        if (interest.Pending == 0)
        {
            interest.Done = true;
            lock (_gate)
            {
                Forget(interest);
            }
        }
    }

    /// <summary>Under the tracker's gate; takes no interest's lock (reports take the gate under theirs).</summary>
    private void Forget(Interest interest)
    {
        _interests.Remove(interest.Id);
        Interlocked.Exchange(ref interest.Throttle, null)?.Dispose();
    }

    private sealed class Interest(string id, InstanceKey key, DateTimeOffset expires)
    {
        public string Id { get; } = id;

        public InstanceKey Key { get; } = key;

        public DateTimeOffset Expires { get; } = expires;

        /// <summary>The instance as this node last held it (what subscriptions are matched against); guarded by the tracker's gate.</summary>
        public Instance? LastKnown { get; set; }

        /// <summary>The removal was applied here (or the instance was never held); guarded by the tracker's gate.</summary>
        public bool Seen { get; set; }

        // The counts and the report timer are guarded by the interest itself.
        public int Delivered { get; set; }

        public int Pending { get; set; }

        public bool Done { get; set; }

#pragma warning disable SA1401, CA1051 // a field, so it can be exchanged atomically
        public ITimer? Throttle;
#pragma warning restore SA1401, CA1051
    }

    /// <summary>The consumers a change took the instances away from, gathered view by view on the loader's loop.</summary>
    private sealed class Record(DrainTracker tracker, List<Interest> removed) : IChangeRecord
    {
        private readonly List<ParkedConsumer>[] _consumers = removed.Select(_ => new List<ParkedConsumer>()).ToArray();

        public void Replaced(SubscriptionView view, ParkedConsumer[] parked)
        {
            if (parked.Length == 0)
            {
                return;
            }

            for (var i = 0; i < removed.Count; i++)
            {
                var (key, held) = (removed[i].Key, removed[i].LastKnown!);
                if (view.Slots.Any(slot => string.Equals(slot.Application, key.Application, StringComparison.Ordinal)
                    && slot.Entries.Any(entry => Fragment.Matches(entry, held))))
                {
                    _consumers[i].AddRange(parked);
                }
            }
        }

        public void End()
        {
            lock (tracker._gate)
            {
                foreach (var interest in removed)
                {
                    interest.Seen = true;
                }
            }

            for (var i = 0; i < removed.Count; i++)
            {
                tracker.Follow(removed[i], _consumers[i]);
            }
        }
    }
}
