namespace Registry.Subscription;

/// <summary>
/// One consumer that parked on a subscription's answer, followed until its answer has been
/// written and flushed to its connection (the flush waits while a connection does not drain,
/// so a consumer that stopped reading is never counted as told) or it left, so that a drain
/// can tell who has heard of a removal and who has not.
/// </summary>
internal sealed class ParkedConsumer
{
    private readonly Lock _gate = new();
    private List<Action<ParkedConsumer>>? _watchers;

    /// <summary>Whether an answer was written to it; meaningful once <see cref="Finished"/>.</summary>
    public bool Sent { get; private set; }

    /// <summary>Whether its request is over: answered, or the client left.</summary>
    public bool Finished { get; private set; }

    /// <summary>
    /// Calls <paramref name="onFinished"/> once the request is over (on the thread that ends it);
    /// false, without calling it, when it is over already.
    /// </summary>
    public bool Watch(Action<ParkedConsumer> onFinished)
    {
        lock (_gate)
        {
            if (Finished)
            {
                return false;
            }

            (_watchers ??= []).Add(onFinished);
            return true;
        }
    }

    /// <summary>Ends the request: <paramref name="sent"/> when its answer's last bytes were flushed.</summary>
    public void Finish(bool sent)
    {
        List<Action<ParkedConsumer>>? watchers;
        lock (_gate)
        {
            if (Finished)
            {
                return;
            }

            Sent = sent;
            Finished = true;
            watchers = _watchers;
            _watchers = null;
        }

        foreach (var watcher in watchers ?? [])
        {
            watcher(this);
        }
    }
}

/// <summary>
/// Told by the hub, as the loader applies a change, which consumers were parked on each answer
/// the change replaced (the drain's record of who held a removed instance).
/// </summary>
internal interface IChangeWitness
{
    /// <summary>
    /// Called after these applications' snapshots were replaced and before their views publish;
    /// returns a record to fill for this change, or null when nothing about it is of interest.
    /// </summary>
    IChangeRecord? Begin(IReadOnlyCollection<string> applications);
}

/// <summary>What one change replaced; filled by the hub on the loader's loop.</summary>
internal interface IChangeRecord
{
    /// <summary>The view published a new answer; <paramref name="parked"/> were waiting on the old one.</summary>
    void Replaced(SubscriptionView view, ParkedConsumer[] parked);

    /// <summary>Every view of the change has published.</summary>
    void End();
}
