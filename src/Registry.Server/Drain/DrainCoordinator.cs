using System.Collections.Concurrent;
using System.Data.Common;
using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using Registry.ChangeFeed;
using Registry.Membership;
using Registry.Model;

namespace Registry.Drain;

/// <summary>
/// The asking side: sends a question to every node through the drain channel and gathers
/// their answers as they arrive, awaiting a signal (never a loop over the database) until
/// every live node has answered or the time runs out. The live nodes are read again now and
/// then, so one that dies while asked stops being waited for.
/// </summary>
internal sealed class DrainCoordinator(
    DrainTracker tracker,
    DrainMessenger messenger,
    RegistryLoader loader,
    LiveNodes live,
    NodeIdentity node,
    IOptions<DrainOptions> options,
    TimeProvider time)
{
    private readonly ConcurrentDictionary<string, Gathering<(int Delivered, int Pending)>> _drains = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Gathering<(Dictionary<string, int> Versions, bool Final)>> _watches = new(StringComparer.Ordinal);

    /// <summary>
    /// Asks every node to follow the removal of <paramref name="key"/>; the removal must be
    /// written after this returns (so every node hears the question first).
    /// </summary>
    /// <exception cref="DbException">The question could not be sent.</exception>
    public async Task<PendingDrain> AskAsync(InstanceKey key, int seconds, CancellationToken cancellationToken)
    {
        var id = NewId();
        var gathering = new Gathering<(int Delivered, int Pending)>();
        _drains[id] = gathering;
        try
        {
            // This node follows it at once, whatever its own feed's delay.
            tracker.Asked(id, seconds, key, loader);
            var askedAt = await messenger.AskAsync(DrainMessages.Ask(id, seconds, key), cancellationToken);
            return new PendingDrain(this, id, gathering, askedAt, time.GetUtcNow() + TimeSpan.FromSeconds(seconds));
        }
        catch
        {
            _drains.TryRemove(id, out _);
            throw;
        }
    }

    /// <summary>Counts the consumers parked on the application on every live node that answers within <see cref="DrainOptions.WatchersWait"/>.</summary>
    /// <exception cref="DbException">The question could not be sent.</exception>
    public async Task<WatchersDocument> WatchersAsync(string application, CancellationToken cancellationToken)
    {
        var id = NewId();
        var gathering = new Gathering<(Dictionary<string, int> Versions, bool Final)>();
        _watches[id] = gathering;
        try
        {
            var askedAt = await messenger.AskAsync(DrainMessages.Watch(id, application), cancellationToken);
            await GatherAsync(gathering, askedAt, time.GetUtcNow() + options.Value.WatchersWait, answer => answer.Final, cancellationToken);
            var nodes = gathering.Snapshot()
                .Where(p => p.Value.Final)
                .OrderBy(p => p.Key, StringComparer.Ordinal)
                .Select(p => new NodeWatchers { Node = p.Key, Parked = p.Value.Versions.Values.Sum(), Versions = p.Value.Versions })
                .ToList();
            return new WatchersDocument { Application = application, Nodes = nodes };
        }
        finally
        {
            _watches.TryRemove(id, out _);
        }
    }

    /// <summary>A node's counts for a drain this node asked; runs on the change feed's reading path.</summary>
    public void Reported(string id, string reporter, int delivered, int pending)
    {
        if (_drains.TryGetValue(id, out var gathering))
        {
            gathering.Set(reporter, _ => (delivered, pending));
        }
    }

    /// <summary>A part of a node's watchers for a question this node asked; runs on the change feed's reading path.</summary>
    public void Watched(string id, string reporter, bool more, string versionList)
    {
        if (_watches.TryGetValue(id, out var gathering))
        {
            var versions = DrainMessages.Versions(versionList).ToArray();
            gathering.Set(reporter, before =>
            {
                var merged = before.Versions ?? new Dictionary<string, int>(StringComparer.Ordinal);
                foreach (var (version, count) in versions)
                {
                    merged[version] = merged.GetValueOrDefault(version) + count;
                }

                return (merged, !more);
            });
        }
    }

    /// <summary>
    /// Waits until every live node's answer is <paramref name="done"/> or the deadline passes;
    /// returns the live nodes as last read (null when they could not be read at all).
    /// </summary>
    private async Task<HashSet<string>?> GatherAsync<T>(
        Gathering<T> gathering, DateTimeOffset askedAt, DateTimeOffset deadline, Func<T, bool> done, CancellationToken cancellationToken)
    {
        HashSet<string>? nodes = null;
        var refreshAt = time.GetUtcNow();
        while (true)
        {
            var now = time.GetUtcNow();
            if (now >= refreshAt)
            {
                refreshAt = now + options.Value.NodesRefreshInterval;
                // A stalled database must not hold the answer past its deadline.
                using var late = new CancellationTokenSource(deadline > now ? deadline - now : TimeSpan.Zero, time);
                using var reading = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, late.Token);
                try
                {
                    // Live now by the cluster's membership, and started when the question was
                    // asked: a later node never heard it.
                    nodes = (await live.ReadAsync(reading.Token))
                        .Where(n => n.Started <= askedAt).Select(n => n.Id).ToHashSet(StringComparer.Ordinal);
                    nodes.Add(node.Id);
                }
                catch (Exception e) when (e is DbException || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
                {
                    // Keep the last set read; without one, nobody is known to be done.
                }
            }

            var signal = gathering.Changed;
            var answers = gathering.Snapshot();
            if (nodes is not null && nodes.All(id => answers.TryGetValue(id, out var answer) && done(answer)))
            {
                return nodes;
            }

            now = time.GetUtcNow();
            if (now >= deadline)
            {
                return nodes;
            }

            // A slow read of the nodes may have taken the time past the next refresh already.
            var wait = (refreshAt < deadline ? refreshAt : deadline) - now;
            if (wait <= TimeSpan.Zero)
            {
                continue;
            }

            try
            {
                await signal.WaitAsync(wait, time, cancellationToken);
            }
            catch (TimeoutException)
            {
            }
        }
    }

    /// <summary>A question's id; it names this node, so the answers come to its own channel (<see cref="DrainMessages.ReplyChannel"/>).</summary>
    private string NewId() => $"{node.Id}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}";

    /// <summary>A drain asked and not yet answered; disposing it stops gathering.</summary>
    internal sealed class PendingDrain(
        DrainCoordinator coordinator, string id, Gathering<(int Delivered, int Pending)> gathering, DateTimeOffset askedAt, DateTimeOffset deadline) : IDisposable
    {
        /// <summary>Waits for every live node to report nothing pending, or for the drain to run out.</summary>
        public async Task<DrainDocument> WaitAsync(CancellationToken cancellationToken)
        {
            var nodes = await coordinator.GatherAsync(gathering, askedAt, deadline, report => report.Pending == 0, cancellationToken);
            var reports = gathering.Snapshot();
            var counted = reports.Where(p => nodes?.Contains(p.Key) ?? true).Select(p => p.Value).ToList();
            return new DrainDocument
            {
                Delivered = counted.Sum(r => r.Delivered),
                Pending = counted.Sum(r => r.Pending),
                Nodes = counted.Count,
                Complete = nodes is not null && nodes.All(n => reports.TryGetValue(n, out var r) && r.Pending == 0),
            };
        }

        public void Dispose() => coordinator._drains.TryRemove(id, out _);
    }
}

/// <summary>Answers per node, and a signal raised whenever one arrives.</summary>
internal sealed class Gathering<T>
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, T> _answers = new(StringComparer.Ordinal);
    private TaskCompletionSource _changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when an answer arrives after this was read.</summary>
    public Task Changed
    {
        get
        {
            lock (_gate)
            {
                return _changed.Task;
            }
        }
    }

    public void Set(string node, Func<T, T> update)
    {
        TaskCompletionSource changed;
        lock (_gate)
        {
            _answers[node] = update(_answers.GetValueOrDefault(node)!);
            changed = _changed;
            _changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        changed.TrySetResult();
    }

    public Dictionary<string, T> Snapshot()
    {
        lock (_gate)
        {
            return new Dictionary<string, T>(_answers, StringComparer.Ordinal);
        }
    }
}
