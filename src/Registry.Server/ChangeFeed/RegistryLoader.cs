// Over 300 lines on purpose: this one loop is the only writer of the in-memory state, so its full loads, reloads and consistency check stay together.
using System.Data.Common;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Leases;
using Registry.Model;
using Registry.State;
using Registry.Storage;
using Registry.Subscription;
using Registry.Telemetry;

namespace Registry.ChangeFeed;

/// <summary>
/// The one writer of <see cref="RegistryState"/>: reloads what a notification announces
/// (the listed instances, or the whole application; bursts coalesce into one query per kind),
/// the whole registry after the change feed (re)connects, and compares a digest of each
/// application's (key, revision) pairs with the database now and then to catch a lost
/// notification. Every load runs
/// through this one loop, in the order notifications arrive (commit order): another node's
/// change is read afresh, one of this node's own batches brings the rows its statement
/// returned. So two loads of the same rows can never be applied out of order.
/// </summary>
internal sealed partial class RegistryLoader(
    RegistryDatabase database,
    RegistryState state,
    OwnCommits own,
    SubscriptionHub hub,
    SweepSchedule sweeps,
    RegistryMetrics metrics,
    IOptions<ChangeFeedOptions> options,
    TimeProvider time,
    ILogger<RegistryLoader> logger) : BackgroundService
{
    private const string SelectColumns = "SELECT i.application, i.protocol, i.addr, i.meta::text, i.ttl_seconds, i.expires_at, i.revision FROM instances i";

    private readonly Channel<Reload> _requests = Channel.CreateUnbounded<Reload>(new UnboundedChannelOptions { SingleReader = true });

    /// <summary>Parked consumers to wake once the loads in hand are answered; only the loader's loop touches it.</summary>
    private readonly List<TaskCompletionSource> _wakes = [];

    /// <summary>The fewest entries of <see cref="_readAt"/> worth forgetting old ones for.</summary>
    internal const int ForgetReadsFrom = 1024;

    /// <summary>
    /// When each application was last read from the database (a count of applied reads), while a
    /// batch may still ask (see <see cref="Forget"/>); only the loader's loop touches it.
    /// </summary>
    private readonly Dictionary<string, long> _readAt = new(StringComparer.Ordinal);

    /// <summary>The size of <see cref="_readAt"/> at which <see cref="Forget"/> runs next.</summary>
    private int _forgetAt = ForgetReadsFrom;

    /// <summary>Database reads applied so far; the loop increments it, a writer reads it in <see cref="Expect"/>.</summary>
    private long _reads;

    /// <summary>The read count of the last full load.</summary>
    private long _allReadAt;

    /// <summary>
    /// A request to reload some instances (<see cref="Keys"/>), one whole application
    /// (<see cref="Application"/> without keys), or everything (neither). <see cref="Tag"/>
    /// is set on a notification of a node's own batch (see <see cref="Announcement"/>).
    /// </summary>
    private sealed record Reload(string? Application, InstanceKey[]? Keys, TaskCompletionSource? Done, string? Tag = null)
    {
        /// <summary>Loads nothing; makes the loop look at this node's own batches again.</summary>
        public static readonly Reload Bookkeeping = new(null, [], null);

        public bool Everything => Application is null && Keys is null;

        /// <summary>Queued again after its read failed: behind notifications that came meanwhile, so never applied from a batch's own rows.</summary>
        public bool Retried { get; init; }
    }

    /// <summary>Schedules what a notification announces; never blocks, never throws.</summary>
    public void Announced(string payload)
    {
        var (application, tag, keys) = Announcement.Parse(payload);
        _requests.Writer.TryWrite(new Reload(application, keys, null, tag));
    }

    /// <summary>
    /// Registers a batch about to run. Once it is <see cref="Settled"/>, its own notifications
    /// apply the rows it returned instead of reading them again, and
    /// <see cref="OwnCommit.Applied"/> completes when all are in memory.
    /// </summary>
    public OwnCommit Expect()
    {
        var commit = own.Expect();
        commit.ReadsApplied = Interlocked.Read(ref _reads);
        return commit;
    }

    /// <summary>Applications whose last read is remembered (for tests and diagnostics).</summary>
    internal int ReadsRemembered => _readAt.Count;

    /// <summary>Stops waiting for a batch's notifications: the writer loaded its rows another way, or it changed nothing.</summary>
    public void Abandon(OwnCommit commit) => own.Abandon(commit);

    /// <summary>Records what the batch changed (one notification per application), or null when it failed.</summary>
    public void Settled(OwnCommit commit, Dictionary<string, Changes>? changes)
    {
        // Its notifications may have been loaded already (read like another node's, the rows not
        // yet known): then it is answered now, not after the loader's pass, whose recomposition
        // of the answers it changed may take a while.
        if (!own.Settle(commit, changes))
        {
            _requests.Writer.TryWrite(Reload.Bookkeeping);
        }
    }

    /// <summary>Counts each notification of this node's own batches against the batch that sent it.</summary>
    private Dictionary<Reload, OwnCommit> Owners(List<Reload> batch)
    {
        var owners = new Dictionary<Reload, OwnCommit>(ReferenceEqualityComparer.Instance);
        foreach (var request in batch)
        {
            if (own.Receive(request.Tag) is { } commit)
            {
                owners[request] = commit;
            }
        }

        return owners;
    }

    /// <summary>Reloads the instances and completes once the new snapshots are in place.</summary>
    public Task ReloadAsync(InstanceKey[] keys)
    {
        if (keys.Length == 0)
        {
            return Task.CompletedTask;
        }

        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _requests.Writer.TryWrite(new Reload(null, keys, done));
        return done.Task;
    }

    /// <summary>Completes once everything announced before this call has been applied (it loads nothing itself).</summary>
    public Task CaughtUpAsync()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _requests.Writer.TryWrite(new Reload(null, [], done));
        return done.Task;
    }

    /// <summary>Reloads the whole registry; fails when the database cannot be read.</summary>
    public Task ReloadAllAsync()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _requests.Writer.TryWrite(new Reload(null, null, done));
        return done.Task;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var reader = _requests.Reader;
        var nextCheck = time.GetUtcNow() + options.Value.ConsistencyCheckInterval;
        var check = Task.CompletedTask;
        while (!stoppingToken.IsCancellationRequested)
        {
            var due = nextCheck - time.GetUtcNow();
            if (due <= TimeSpan.Zero)
            {
                nextCheck = time.GetUtcNow() + options.Value.ConsistencyCheckInterval;
                // Beside the loop, not on it: with a large registry the check takes a good part of
                // a second, and the changes it would hold up are what consumers wait for.
                if (check.IsCompleted)
                {
                    check = CheckConsistencyAsync(stoppingToken);
                }

                continue;
            }

            using (var wait = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken))
            {
                wait.CancelAfter(due);
                try
                {
                    await reader.WaitToReadAsync(wait.Token);
                }
                catch (OperationCanceledException) when (!stoppingToken.IsCancellationRequested)
                {
                    continue;
                }
            }

            var batch = new List<Reload>();
            while (reader.TryRead(out var request))
            {
                batch.Add(request);
            }

            await ApplyAsync(batch, stoppingToken);
        }
    }

    private async Task ApplyAsync(List<Reload> batch, CancellationToken cancellationToken)
    {
        var all = batch.Any(r => r.Everything);
        var owners = Owners(batch);

        // This node's own notifications bring rows it already holds (the batch returned them);
        // the rest are read afresh. So are a batch's rows of an application this pass reads anyway:
        // applied before the read, they would stand without the change the read brings (another
        // node's, earlier) if the read failed, a state the database never held.
        var supplied = new List<(Reload Request, Changes Changes)>();
        var reads = new List<Reload>();
        var applications = new HashSet<string>(StringComparer.Ordinal);
        var keys = new HashSet<InstanceKey>();
        foreach (var request in batch)
        {
            if (request.Keys is not null && owners.GetValueOrDefault(request) is { } commit && commit.For(request.Application!) is { } changes)
            {
                if (request.Retried || ReadSince(request.Application!, commit.ReadsApplied))
                {
                    // A read applied since the batch ran may hold a later write to these rows
                    // (another node's, or this node's next batch): the batch's own rows would
                    // take memory back to an older state. Read them afresh instead. So with a
                    // notification queued again after a failed read: a later batch's own rows,
                    // queued before it now, would be applied first.
                    keys.UnionWith(changes.Keys);
                    reads.Add(request);
                }
                else
                {
                    supplied.Add((request, changes));
                }
            }
            else if (request is { Keys: null, Application: { } application })
            {
                applications.Add(application);
                reads.Add(request);
            }
            else if (request.Keys is { Length: > 0 } listed)
            {
                keys.UnionWith(listed);
                reads.Add(request);
            }
        }

        var read = keys.Select(k => k.Application).Concat(applications).ToHashSet(StringComparer.Ordinal);
        foreach (var (request, changes) in supplied.Where(s => read.Contains(s.Request.Application!)))
        {
            keys.UnionWith(changes.Keys);
            reads.Add(request);
        }

        supplied.RemoveAll(s => read.Contains(s.Request.Application!));
        keys.RemoveWhere(k => applications.Contains(k.Application));
        Exception? failure = null;
        try
        {
            if (all)
            {
                await LoadAllAsync(cancellationToken);
            }
            else
            {
                // Supplied rows first: a query reads the database as it is now, which is at least
                // as new as every notification already received, so it must be applied last. They
                // are published before each query (see Publish): no query reads their applications.
                Merge(supplied.Select(s => (s.Request.Application!, (IReadOnlyCollection<InstanceKey>)s.Changes.Keys, s.Changes.Rows.ToArray())));
                if (applications.Count > 0)
                {
                    Publish();
                    await LoadApplicationsAsync(applications.ToArray(), cancellationToken);
                }

                if (keys.Count > 0)
                {
                    Publish();
                    await LoadInstancesAsync(keys.ToArray(), cancellationToken);
                }
            }
        }
        catch (DbException e)
        {
            failure = e;
            metrics.DatabaseError("reload");
            LogReloadFailed(logger, e);
            // Retry what was to be read with the next batch (the feed reconnects and reloads
            // everything anyway if the database was lost; a full load is not retried here: the
            // feed's reconnection loads all again). This node's own notifications among
            // them are not loaded: they are counted again when the retry brings their rows, so
            // the batches that sent them are not answered as in memory before they are (the
            // writer stops waiting after a while and reloads the rows itself, or says it could not).
            foreach (var request in all ? batch : reads)
            {
                if (owners.GetValueOrDefault(request) is { } commit)
                {
                    commit.Received--;
                }

                if (!all)
                {
                    _requests.Writer.TryWrite(request with { Done = null, Retried = true });
                }
            }
        }
        catch
        {
            // The loop ends (the node is stopping): what was applied is still recomposed and its
            // consumers woken, so no read or parked poll waits for it.
            Publish();
            throw;
        }

        own.CompleteLoaded();
        foreach (var done in batch.Select(r => r.Done).OfType<TaskCompletionSource>().Distinct())
        {
            if (failure is null)
            {
                done.TrySetResult();
            }
            else
            {
                done.TrySetException(failure);
            }
        }

        // After the writes are answered: the answers they changed are recomposed while their
        // replies go out, and the consumers' answers are queued after them.
        Publish();

        if (failure is not null)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), time, cancellationToken);
        }
    }

    /// <summary>
    /// Publishes what is applied before the next query: a read or poll of a changed application waits for its
    /// recomposed answer (<see cref="SubscriptionView.FreshAsync"/>), and must not wait for a query about other
    /// rows, which takes as long as the database does (a lock, a failover: up to the statement timeout).
    /// </summary>
    private void Publish()
    {
        hub.Recompose(_wakes);
        Wake();
    }

    private bool ReadSince(string application, long reads) => _allReadAt > reads || _readAt.GetValueOrDefault(application) > reads;

    /// <summary>Counts a read just applied, for the applications it covered.</summary>
    private void Read(IEnumerable<string> applications)
    {
        var at = Interlocked.Increment(ref _reads);
        foreach (var application in applications)
        {
            _readAt[application] = at;
        }

        if (_readAt.Count >= _forgetAt)
        {
            Forget();
        }
    }

    /// <summary>
    /// Forgets the reads no pending batch can ask about: each asks only whether a read came after
    /// its own count, and a batch registered later reads a count at least the current one. Keeps
    /// the map to the applications read lately, not every name ever read.
    /// </summary>
    private void Forget()
    {
        var oldest = own.OldestReadsApplied(none: Interlocked.Read(ref _reads));
        foreach (var (application, at) in _readAt)
        {
            if (at <= oldest)
            {
                _readAt.Remove(application);
            }
        }

        // The table as well: a burst of names would otherwise keep its size after they are gone.
        _readAt.TrimExcess();
        _forgetAt = Math.Max(ForgetReadsFrom, 2 * _readAt.Count);
    }

    private void Wake()
    {
        foreach (var wake in _wakes)
        {
            wake.TrySetResult();
        }

        _wakes.Clear();
    }

    private async Task LoadAllAsync(CancellationToken cancellationToken)
    {
        var loaded = await QueryAsync(SelectColumns, null, cancellationToken);
        var before = state.Applications;
        state.ReplaceAll(loaded.Values);
        _allReadAt = Interlocked.Increment(ref _reads);
        _readAt.Clear();
        metrics.Reloaded(all: true);
        var changed = before.Keys.Union(loaded.Keys, StringComparer.Ordinal)
            .Where(a => !(loaded.TryGetValue(a, out var now) && now.SameContentAs(before.GetValueOrDefault(a))))
            .ToArray();
        // Marked stale before the writes the load covers are answered: a read after one waits for its answer.
        hub.ApplicationsChanged(changed);
        own.CompleteSettled();
        LogLoadedAll(logger, loaded.Count, loaded.Values.Sum(s => s.Count));
    }

    private async Task LoadApplicationsAsync(string[] applications, CancellationToken cancellationToken)
    {
        var loaded = await QueryAsync(SelectColumns + " WHERE i.application = ANY(@applications)", command =>
            command.Parameters.Add(new NpgsqlParameter<string[]>("applications", applications)), cancellationToken);
        var snapshots = applications.Select(a => loaded.GetValueOrDefault(a) ?? new ApplicationSnapshot(a, [])).ToArray();
        var changed = snapshots
            .Where(s => !(s.SameContentAs(state.Get(s.Application)) || (s.Count == 0 && state.Get(s.Application) is null)))
            .Select(s => s.Application)
            .ToArray();
        state.Replace(snapshots);
        Read(applications);
        metrics.Reloaded(all: false);
        hub.ApplicationsChanged(changed);
    }

    /// <summary>Reloads single rows and merges them into their applications' snapshots.</summary>
    private async Task LoadInstancesAsync(InstanceKey[] keys, CancellationToken cancellationToken)
    {
        // Merged into the snapshots as they are (Merge tells the sweeper), not built into snapshots of their own.
        var loaded = await QueryRowsAsync(
            SelectColumns + """
                 JOIN unnest(@applications, @protocols, @addrs) AS k(application, protocol, addr)
                   ON i.application = k.application AND i.protocol = k.protocol AND i.addr = k.addr
                """,
            command => InstanceKeys.AddParameters(command.Parameters, keys),
            cancellationToken);
        Merge(keys.GroupBy(k => k.Application, StringComparer.Ordinal)
            .Select(g => (g.Key, (IReadOnlyCollection<InstanceKey>)g.ToArray(), loaded.GetValueOrDefault(g.Key) ?? [])));
        Read(keys.Select(k => k.Application).Distinct(StringComparer.Ordinal));
    }

    /// <summary>
    /// Applies reloaded instances in order: each key is replaced by its row, or removed when it
    /// has none. Wakes the consumers of the applications whose revisions moved.
    /// </summary>
    private void Merge(IEnumerable<(string Application, IReadOnlyCollection<InstanceKey> Keys, Instance[] Rows)> changes)
    {
        var snapshots = new Dictionary<string, ApplicationSnapshot>(StringComparer.Ordinal);
        var changed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (application, keys, rows) in changes)
        {
            var before = snapshots.GetValueOrDefault(application) ?? state.Get(application) ?? new ApplicationSnapshot(application, []);
            var after = before.With(keys, rows);
            snapshots[application] = after;
            // Revisions move exactly when what a consumer sees, the TTL or the session holding the instance changes.
            if (keys.Any(key => before.Find(key)?.Revision != after.Find(key)?.Revision))
            {
                changed.Add(application);
            }

            if (rows.Length > 0)
            {
                sweeps.Consider(rows.Min(r => r.ExpiresAt));
            }
        }

        if (snapshots.Count == 0)
        {
            return;
        }

        state.Replace(snapshots.Values);
        metrics.Reloaded(all: false);
        hub.ApplicationsChanged(changed);
    }

    /// <summary>Whole applications as snapshots; the sweeper hears of their earliest expiries.</summary>
    private async Task<Dictionary<string, ApplicationSnapshot>> QueryAsync(string sql, Action<NpgsqlCommand>? parameters, CancellationToken cancellationToken)
    {
        var rows = await QueryRowsAsync(sql, parameters, cancellationToken);
        var snapshots = rows.ToDictionary(p => p.Key, p => new ApplicationSnapshot(p.Key, p.Value), StringComparer.Ordinal);
        foreach (var snapshot in snapshots.Values)
        {
            sweeps.Consider(snapshot.EarliestExpiry);
        }

        return snapshots;
    }

    /// <summary>The rows the query returns, per application.</summary>
    private async Task<Dictionary<string, Instance[]>> QueryRowsAsync(string sql, Action<NpgsqlCommand>? parameters, CancellationToken cancellationToken)
    {
        await using var command = database.DataSource.CreateCommand(sql);
        parameters?.Invoke(command);

        var rows = new Dictionary<string, List<Instance>>(StringComparer.Ordinal);
        var strings = new StringPool();
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                Add(rows, reader, strings);
            }
        }

        return rows.ToDictionary(p => p.Key, p => p.Value.ToArray(), StringComparer.Ordinal);
    }

    /// <summary>
    /// The row the reader is on, added to its application's list. Compiled optimized at once: a
    /// full load calls it for every instance while the node starts, before the tiered JIT would.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Add(Dictionary<string, List<Instance>> rows, NpgsqlDataReader reader, StringPool strings)
    {
        var key = new InstanceKey(strings.Get(reader.GetString(0)), strings.Get(reader.GetString(1)), reader.GetString(2));
        var instance = new Instance(key, MetaJson.Parse(reader.GetString(3), strings), reader.GetInt32(4),
            new DateTimeOffset(reader.GetDateTime(5), TimeSpan.Zero), reader.GetInt64(6));
        if (!rows.TryGetValue(key.Application, out var list))
        {
            rows[key.Application] = list = [];
        }

        list.Add(instance);
    }

    /// <summary>
    /// NOTIFY is a hint, not a log: compare each application's count and content digest with
    /// the database, and have the loop reload what differs. Runs beside the loop: an
    /// application that changes meanwhile may look different and is reloaded once more, which
    /// is harmless; one that differs is never missed.
    /// </summary>
    private async Task CheckConsistencyAsync(CancellationToken cancellationToken)
    {
        try
        {
            await Task.Yield();
            await using var command = database.DataSource.CreateCommand(
                $"SELECT application, count(*)::int, {ApplicationSnapshot.ContentDigestSql} FROM instances GROUP BY application");
            var inDatabase = new Dictionary<string, (int Count, string Digest)>(StringComparer.Ordinal);
            await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
            {
                while (await reader.ReadAsync(cancellationToken))
                {
                    inDatabase[reader.GetString(0)] = (reader.GetInt32(1), reader.GetString(2));
                }
            }

            var memory = state.Applications;
            var stale = inDatabase
                .Where(p => !memory.TryGetValue(p.Key, out var s) || s.Count != p.Value.Count || s.ContentDigest != p.Value.Digest)
                .Select(p => p.Key)
                .Concat(memory.Keys.Where(a => !inDatabase.ContainsKey(a)))
                .ToArray();
            if (stale.Length > 0)
            {
                LogInconsistent(logger, stale.Length);
                foreach (var application in stale)
                {
                    _requests.Writer.TryWrite(new Reload(application, null, null));
                }
            }
        }
        catch (DbException e)
        {
            metrics.DatabaseError("consistency_check");
            LogReloadFailed(logger, e);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping.
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Loaded the whole registry: {Applications} applications, {Instances} instances")]
    private static partial void LogLoadedAll(ILogger logger, int applications, int instances);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reloading from the database failed; serving the last snapshot and retrying")]
    private static partial void LogReloadFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Consistency check found {Applications} applications out of date (a notification was lost); reloaded them")]
    private static partial void LogInconsistent(ILogger logger, int applications);
}
