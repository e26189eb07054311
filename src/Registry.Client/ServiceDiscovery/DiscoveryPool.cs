// Over 300 lines on purpose: the pooled watches, their reference counts and retention share the pool's one lock.
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;

namespace Registry.Client.ServiceDiscovery;

/// <summary>
/// The subscriptions behind service discovery, one pool per <see cref="RegistryClient"/>. Applications are watched
/// in groups of up to 64 (the registry's limit of entries in one subscription), so a process resolving many
/// services holds few long polls. A watch is reference-counted by the endpoint providers using it and kept for
/// <see cref="RegistryClientOptions.DiscoveryRetention"/> after the last one let go, so its last answer outlives
/// Microsoft.Extensions.ServiceDiscovery's idle watchers and still serves during an outage.
/// </summary>
internal sealed partial class DiscoveryPool(RegistryClient client, RegistryTransport transport, RegistryClientOptions options, TimeProvider time, ILogger logger)
    : IAsyncDisposable
{
    /// <summary>The registry's cap on entries in one subscription.</summary>
    internal const int MaxEntries = 64;

    private readonly object _gate = new();
    private readonly Dictionary<string, ApplicationWatch> _watches = new(StringComparer.Ordinal);
    private readonly List<WatchGroup> _groups = [];
    private readonly CancellationTokenSource _disposed = new();

    /// <summary>Change tokens to fire once the lock is let go (see <see cref="FirePending"/>); guarded by the lock.</summary>
    private readonly List<CancellationTokenSource> _pending = [];

    /// <summary>Replacements started and perhaps still running (disposing waits for them); guarded by the lock.</summary>
    private readonly List<Task> _replacements = [];
    private Task<HashSet<string>?>? _directory;
    private long _directoryAt;

    /// <summary>The groups now held (for tests: how many polls the pool keeps).</summary>
    internal int GroupCount
    {
        get
        {
            lock (_gate)
            {
                return _groups.Count(g => g.Applications.Count > 0);
            }
        }
    }

    /// <summary>
    /// Whether the registry lists an application named <paramref name="name"/> as registered now, and its spelling
    /// there: service discovery's names come from URIs, whose hosts .NET lowercases, while application names are
    /// case-sensitive (<c>PAYMENT-SERVICE</c>, as Eureka spells them). A name listed in another case, and only in
    /// one, is that application. <see langword="null"/> (and the name as given) when the registry cannot say
    /// (unreachable, or a credential that may not list every application). The list is fetched at most once per
    /// <see cref="RegistryClientOptions.RetryBaseDelay"/> however many names are asked about.
    /// </summary>
    public async Task<(bool? Listed, string Application)> LookUpAsync(string name, CancellationToken cancellationToken)
    {
        Task<HashSet<string>?> directory;
        lock (_gate)
        {
            if (_watches.ContainsKey(name))
            {
                return (true, name);
            }

            if (_directory is null || (_directory.IsCompleted && time.GetElapsedTime(_directoryAt) > options.RetryBaseDelay))
            {
                _directoryAt = time.GetTimestamp();
                _directory = ListAsync();
            }

            directory = _directory;
        }

        var names = await directory.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (names is null || names.Contains(name))
        {
            return (names is null ? null : true, name);
        }

        var spelled = names.Where(n => string.Equals(n, name, StringComparison.OrdinalIgnoreCase)).Take(2).ToList();
        return spelled.Count == 1 ? (true, spelled[0]) : (false, name);
    }

    private async Task<HashSet<string>?> ListAsync()
    {
        try
        {
            var services = await transport.GetServicesAsync(options.RequestTimeout, _disposed.Token).ConfigureAwait(false);
            return services.Select(s => s.Application).ToHashSet(StringComparer.Ordinal);
        }
#pragma warning disable CA1031 // Not knowing is an answer: the caller subscribes as it would without the list.
        catch (Exception e)
#pragma warning restore CA1031
        {
            LogDirectoryUnavailable(logger, e.Message);
            return null;
        }
    }

    /// <summary>Takes a reference to the watch of <paramref name="application"/>, creating it (or recreating a failed one).</summary>
    public ApplicationWatch Acquire(string application)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
            if (_watches.TryGetValue(application, out var existing) && existing.Failure is null)
            {
                existing.References++;
                existing.Retention?.Dispose();
                existing.Retention = null;
                return existing;
            }

            var watch = new ApplicationWatch(application) { References = 1 };
            _watches[application] = watch;
            var group = _groups.FirstOrDefault(g => !g.Isolated && g.Applications.Count < MaxEntries) ?? AddGroup(isolated: false);
            Join(group, watch);
            return watch;
        }
    }

    /// <summary>Gives a reference back; the last one starts the retention period.</summary>
    public void Release(ApplicationWatch watch)
    {
        lock (_gate)
        {
            if (--watch.References > 0 || _disposed.IsCancellationRequested || watch.Group is null)
            {
                return;
            }

            watch.Retention = time.CreateTimer(_ => Expire(watch), null, options.DiscoveryRetention, Timeout.InfiniteTimeSpan);
        }
    }

    private void Expire(ApplicationWatch watch)
    {
        lock (_gate)
        {
            if (watch.References > 0 || watch.Group is not { } group)
            {
                return;
            }

            watch.Retention?.Dispose();
            watch.Retention = null;
            Leave(group, watch);
            if (_watches.TryGetValue(watch.Application, out var current) && ReferenceEquals(current, watch))
            {
                _watches.Remove(watch.Application);
            }
        }
    }

    private WatchGroup AddGroup(bool isolated)
    {
        var group = new WatchGroup(isolated);
        _groups.Add(group);
        return group;
    }

    private void Join(WatchGroup group, ApplicationWatch watch)
    {
        group.Applications[watch.Application] = watch;
        watch.Group = group;
        Resubscribe(group);
    }

    private void Leave(WatchGroup group, ApplicationWatch watch)
    {
        group.Applications.Remove(watch.Application);
        watch.Group = null;
        Resubscribe(group);
    }

    /// <summary>
    /// Replaces the group's subscription with one for its applications now. Bursts (many services resolved at
    /// start) coalesce: one replacement runs at a time and takes the membership as it is when it starts.
    /// </summary>
    private void Resubscribe(WatchGroup group)
    {
        group.Dirty = true;
        if (!group.Replacing)
        {
            group.Replacing = true;
            _replacements.RemoveAll(replacement => replacement.IsCompleted);
            _replacements.Add(Task.Run(() => ReplaceAsync(group)));
        }
    }

    private async Task ReplaceAsync(WatchGroup group)
    {
        while (true)
        {
            SubscriptionEntry[] entries;
            RegistrySubscription? old;
            lock (_gate)
            {
                if (!group.Dirty || _disposed.IsCancellationRequested)
                {
                    group.Replacing = false;
                    return;
                }

                group.Dirty = false;
                entries = [.. group.Applications.Keys.Order(StringComparer.Ordinal).Select(a => new SubscriptionEntry(a))];
                old = group.Subscription;
                group.Subscription = null;
                if (entries.Length == 0)
                {
                    _groups.Remove(group);
                }
            }

            long? knownAt = null;
            if (old is not null)
            {
                await old.DisposeAsync().ConfigureAwait(false);
                // What it knew stands for its replacement: after a failover to a stale node, its older answer must not
                // bring back the endpoints since gone.
                knownAt = old.KnownAt;
            }

            if (entries.Length == 0)
            {
                continue;
            }

            RegistrySubscription subscription;
            try
            {
                subscription = await client.SubscribeAsync(entries, knownAt, _disposed.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (_disposed.IsCancellationRequested)
            {
                continue;
            }
#pragma warning disable CA1031 // Starting a subscription only reads the cache file; should it fail, its names are resolved afresh next time.
            catch (Exception e)
#pragma warning restore CA1031
            {
                LogStartFailed(logger, e.Message);
                lock (_gate)
                {
                    foreach (var watch in group.Applications.Values)
                    {
                        Forget(watch, e);
                    }

                    group.Applications.Clear();
                }

                FirePending();
                continue;
            }

            lock (_gate)
            {
                if (_disposed.IsCancellationRequested)
                {
                    old = subscription;
                }
                else
                {
                    group.Subscription = subscription;
                    old = null;
                    subscription.Changed += (_, e) => Deliver(group, subscription, e.Current, fromCache: false);
                    if (subscription.Current is { } current)
                    {
                        // Read after the answer: no node has answered yet, so it is the cache file's (a live answer sets
                        // LastContact before it is taken). A later live answer comes through Changed.
                        Deliver(group, subscription, current, fromCache: subscription.LastContact is null);
                    }

                    _ = WatchForRefusalAsync(group, subscription);
                }
            }

            FirePending();
            if (old is not null)
            {
                await old.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Hands each application of the group its part of the answer; only the ones whose part changed are told. An answer
    /// from the cache file goes only to watches that know nothing yet: the file of a new membership (the group regrouped)
    /// may be hours older than what the group's other watches last heard from the registry.
    /// </summary>
    private void Deliver(WatchGroup group, RegistrySubscription subscription, RegistryAnswer answer, bool fromCache)
    {
        lock (_gate)
        {
            if (!ReferenceEquals(group.Subscription, subscription))
            {
                return;
            }

            var byApplication = answer.Endpoints.ToLookup(e => e.Application, StringComparer.Ordinal);
            // Only the applications this subscription asks for: one that joined the group since waits for the next.
            foreach (var entry in subscription.Entries)
            {
                if (group.Applications.TryGetValue(entry.Provider, out var watch) && !(fromCache && watch.Endpoints is not null)
                    && watch.Offer([.. byApplication[entry.Provider]]) is { } changed)
                {
                    _pending.Add(changed);
                }
            }
        }

        FirePending();
    }

    /// <summary>
    /// Fires the change tokens of watches changed under the lock, once this thread holds it no more: their callbacks are
    /// the app's (a resolver's refresh, anything registered on a change token), and one that waits for another resolution
    /// on another thread would otherwise wait for this lock for ever. Whoever lets the lock go last fires them.
    /// </summary>
    private void FirePending()
    {
        if (Monitor.IsEntered(_gate))
        {
            return;
        }

        CancellationTokenSource[] fire;
        lock (_gate)
        {
            if (_pending.Count == 0)
            {
                return;
            }

            fire = [.. _pending];
            _pending.Clear();
        }

        foreach (var changed in fire)
        {
            ChangeSignal.Fire(changed, logger);
        }
    }

    private async Task WatchForRefusalAsync(WatchGroup group, RegistrySubscription subscription)
    {
        await subscription.Ended.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        if (subscription.State != RegistryConnectionState.Refused || subscription.LastError is not { } error)
        {
            return;
        }

        try
        {
            lock (_gate)
            {
                if (!ReferenceEquals(group.Subscription, subscription))
                {
                    return;
                }

                group.Subscription = null;
                // A 403 names the application the credential may not subscribe to: only that one is let go.
                if (error is RegistryAccessDeniedException { Problem: { } problem }
                    && problem.Extensions.TryGetValue("application", out var named)
                    && named.ValueKind == System.Text.Json.JsonValueKind.String
                    && group.Applications.Count > 1
                    && group.Applications.TryGetValue(named.GetString()!, out var forbidden))
                {
                    group.Applications.Remove(forbidden.Application);
                    Forget(forbidden, error);
                    Resubscribe(group);
                    return;
                }

                var watches = group.Applications.Values.ToList();
                // A 401 is the credential's, whatever the applications: each on its own would be refused alike.
                if (watches.Count > 1 && error is not RegistryAccessDeniedException { IsAuthenticationFailure: true })
                {
                    // The registry refuses a subscription whole when one provider is forbidden; not knowing which, give each
                    // application its own, so one forbidden name does not take its neighbours down.
                    LogSplit(logger, watches.Count, error.Message);
                    _groups.Remove(group);
                    foreach (var watch in watches)
                    {
                        Join(AddGroup(isolated: true), watch);
                    }

                    return;
                }

                _groups.Remove(group);
                foreach (var watch in watches)
                {
                    Forget(watch, error);
                }
            }
        }
        finally
        {
            FirePending();
        }
    }

    /// <summary>Fails a watch and lets it go: the next resolution of the name creates a new subscription instead of repeating this failure.</summary>
    private void Forget(ApplicationWatch watch, Exception error)
    {
        watch.Group = null;
        _pending.Add(watch.Fail(error));
        if (_watches.TryGetValue(watch.Application, out var current) && ReferenceEquals(current, watch))
        {
            _watches.Remove(watch.Application);
        }
    }

    /// <summary>
    /// Stops every subscription, including one a replacement has taken out of its group and is still disposing or
    /// has just started: none outlives the pool (and the client's HTTP handler, which its owner disposes next).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        List<RegistrySubscription> subscriptions;
        Task[] replacements;
        lock (_gate)
        {
            if (_disposed.IsCancellationRequested)
            {
                return;
            }

            _disposed.Cancel();
            subscriptions = [.. _groups.Select(g => g.Subscription).OfType<RegistrySubscription>()];
            foreach (var watch in _watches.Values)
            {
                watch.Retention?.Dispose();
            }

            _groups.Clear();
            _watches.Clear();
            replacements = [.. _replacements];
        }

        foreach (var subscription in subscriptions)
        {
            await subscription.DisposeAsync().ConfigureAwait(false);
        }

        // A replacement sees the pool disposed at its next step and stops there; it catches what it meets on the way.
        await Task.WhenAll(replacements).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Could not list the registered applications; resolving by subscription: {Reason}")]
    private static partial void LogDirectoryUnavailable(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not start a subscription for service discovery: {Reason}")]
    private static partial void LogStartFailed(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The registry refused a subscription to {Count} applications; subscribing to each alone: {Reason}")]
    private static partial void LogSplit(ILogger logger, int count, string reason);
}

/// <summary>Applications watched through one subscription. Guarded by the pool's lock.</summary>
internal sealed class WatchGroup(bool isolated)
{
    /// <summary>A group of one application whose combined subscription was refused: it takes no others.</summary>
    public bool Isolated { get; } = isolated;

    public Dictionary<string, ApplicationWatch> Applications { get; } = new(StringComparer.Ordinal);

    public RegistrySubscription? Subscription { get; set; }

    public bool Dirty { get; set; }

    public bool Replacing { get; set; }
}

/// <summary>One application's part of a pooled subscription: its last endpoints and a change token.</summary>
#pragma warning disable CA1001 // The change token sources are never disposed: a CancellationChangeToken handed out may still register on one.
internal sealed class ApplicationWatch(string application)
#pragma warning restore CA1001
{
    private readonly object _gate = new();
    private readonly TaskCompletionSource _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private CancellationTokenSource _changed = new();
    private IReadOnlyList<ProviderInstance>? _endpoints;
    private Exception? _failure;

    public string Application { get; } = application;

    // Guarded by the pool's lock.
    internal int References { get; set; }

    internal ITimer? Retention { get; set; }

    internal WatchGroup? Group { get; set; }

    /// <summary>The last endpoints of the application; <see langword="null"/> before the first answer.</summary>
    public IReadOnlyList<ProviderInstance>? Endpoints
    {
        get
        {
            lock (_gate)
            {
                return _endpoints;
            }
        }
    }

    /// <summary>Why the registry refused the subscription; such a watch is replaced on the next resolution.</summary>
    public Exception? Failure
    {
        get
        {
            lock (_gate)
            {
                return _failure;
            }
        }
    }

    /// <summary>Completes with the first answer, or when the watch fails.</summary>
    public Task FirstAnswer => _first.Task;

    /// <summary>Fires on the next change of this application's endpoints (not on changes of its group's other applications).</summary>
    public IChangeToken GetChangeToken()
    {
        lock (_gate)
        {
            return new CancellationChangeToken(_changed.Token);
        }
    }

    /// <summary>Takes the endpoints; the source behind the handed-out change tokens, for the caller to fire, when they changed.</summary>
    internal CancellationTokenSource? Offer(IReadOnlyList<ProviderInstance> endpoints)
    {
        CancellationTokenSource changed;
        lock (_gate)
        {
            if (_endpoints is not null && _endpoints.SequenceEqual(endpoints, InstanceComparer.Instance))
            {
                return null;
            }

            _endpoints = endpoints;
            changed = _changed;
            _changed = new CancellationTokenSource();
        }

        _first.TrySetResult();
        return changed;
    }

    /// <summary>Fails the watch; the source behind the handed-out change tokens, for the caller to fire.</summary>
    internal CancellationTokenSource Fail(Exception error)
    {
        CancellationTokenSource changed;
        lock (_gate)
        {
            _failure = error;
            changed = _changed;
            _changed = new CancellationTokenSource();
        }

        // The first answer is released, not failed: the provider reads Failure and lets the next provider resolve the name.
        // A resolver that already holds endpoints hears of it too (the source fired), or it would serve them for ever:
        // it resolves again, and the provider, reading Failure, lets this watch go.
        _first.TrySetResult();
        return changed;
    }

    private sealed class InstanceComparer : IEqualityComparer<ProviderInstance>
    {
        public static readonly InstanceComparer Instance = new();

        public bool Equals(ProviderInstance? x, ProviderInstance? y) =>
            x is not null && y is not null
            && string.Equals(x.Protocol, y.Protocol, StringComparison.Ordinal)
            && string.Equals(x.Addr, y.Addr, StringComparison.Ordinal)
            && x.Meta.Count == y.Meta.Count
            && x.Meta.All(p => y.Meta.TryGetValue(p.Key, out var v) && string.Equals(v, p.Value, StringComparison.Ordinal));

        public int GetHashCode(ProviderInstance obj) => HashCode.Combine(obj.Protocol, obj.Addr);
    }
}
