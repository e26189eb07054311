using System.Collections.Concurrent;
using System.Data.Common;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Leases;
using Registry.Model;
using Registry.Operations;
using Registry.Storage;
using Registry.Subscription;

namespace Registry.ChangeFeed;

/// <summary>
/// The one writer of <see cref="RegistryState"/>: reloads what a notification announces
/// (the listed instances, or the whole application; bursts coalesce into one query per kind),
/// the whole registry after the change feed (re)connects, and compares per-application counts
/// and revisions with the database now and then to catch a lost notification. Every load runs
/// through this one loop and reads the database afresh, so two loads of the same rows can
/// never be applied out of order.
/// </summary>
internal sealed partial class RegistryLoader(
    RegistryDatabase database,
    RegistryState state,
    SubscriptionHub hub,
    SweepSchedule sweeps,
    RegistryMetrics metrics,
    IOptions<ChangeFeedOptions> options,
    TimeProvider time,
    ILogger<RegistryLoader> logger) : BackgroundService
{
    private const string SelectColumns = "SELECT i.application, i.protocol, i.addr, i.meta::text, i.ttl_seconds, i.expires_at, i.revision FROM instances i";

    private readonly Channel<Reload> _requests = Channel.CreateUnbounded<Reload>(new UnboundedChannelOptions { SingleReader = true });

    /// <summary>This node's committed batches awaiting their own notifications, per backend, in commit order.</summary>
    private readonly ConcurrentDictionary<int, ConcurrentQueue<OwnCommit>> _own = new();

    /// <summary>
    /// A request to reload one instance (<see cref="Key"/>), one application
    /// (<see cref="Application"/>), or everything (neither). <see cref="Backend"/> is set on
    /// one request per notification: the backend that sent it.
    /// </summary>
    private sealed record Reload(string? Application, InstanceKey? Key, TaskCompletionSource? Done, int? Backend = null);

    /// <summary>Schedules what a notification announces; never blocks, never throws.</summary>
    public void Announced(string payload, int backend)
    {
        var (application, keys) = Announcement.Parse(payload);
        if (keys is null)
        {
            _requests.Writer.TryWrite(new Reload(application, null, null, backend));
            return;
        }

        for (var i = 0; i < keys.Length; i++)
        {
            _requests.Writer.TryWrite(new Reload(null, keys[i], null, i == 0 ? backend : null));
        }
    }

    /// <summary>
    /// Registers a batch about to commit on <paramref name="backend"/> that will send
    /// <paramref name="notifications"/> notifications: <see cref="OwnCommit.Applied"/> completes
    /// once they have been loaded, so the writer acknowledges its writes without reloading the
    /// same rows a second time. Notifications from one backend arrive in commit order.
    /// </summary>
    public OwnCommit Expect(int backend, int notifications)
    {
        var commit = new OwnCommit(notifications);
        _own.GetOrAdd(backend, _ => new ConcurrentQueue<OwnCommit>()).Enqueue(commit);
        return commit;
    }

    /// <summary>Counts a loaded notification against the oldest batch its backend committed.</summary>
    private void Loaded(int backend)
    {
        if (!_own.TryGetValue(backend, out var queue))
        {
            return; // another node's
        }

        while (queue.TryPeek(out var head) && head.Abandoned)
        {
            queue.TryDequeue(out _);
        }

        if (queue.TryPeek(out var oldest) && --oldest.Remaining == 0)
        {
            queue.TryDequeue(out _);
            oldest.Applied.TrySetResult();
        }
    }

    /// <summary>After a full load everything committed so far is in memory.</summary>
    private void LoadedEverything()
    {
        foreach (var queue in _own.Values)
        {
            while (queue.TryDequeue(out var commit))
            {
                commit.Applied.TrySetResult();
            }
        }
    }

    /// <summary>Reloads the instances and completes once the new snapshots are in place.</summary>
    public Task ReloadAsync(IEnumerable<InstanceKey> keys)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var any = false;
        foreach (var key in keys)
        {
            any = true;
            _requests.Writer.TryWrite(new Reload(null, key, done));
        }

        if (!any)
        {
            done.TrySetResult();
        }

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
        while (!stoppingToken.IsCancellationRequested)
        {
            var due = nextCheck - time.GetUtcNow();
            if (due <= TimeSpan.Zero)
            {
                nextCheck = time.GetUtcNow() + options.Value.ConsistencyCheckInterval;
                await CheckConsistencyAsync(stoppingToken);
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
        var all = batch.Any(r => r.Application is null && r.Key is null);
        var applications = batch.Where(r => r.Application is not null).Select(r => r.Application!).ToHashSet(StringComparer.Ordinal);
        var keys = batch.Where(r => r.Key is { } key && !applications.Contains(key.Application)).Select(r => r.Key!.Value).Distinct().ToArray();
        Exception? failure = null;
        try
        {
            if (all)
            {
                await LoadAllAsync(cancellationToken);
            }
            else
            {
                if (applications.Count > 0)
                {
                    await LoadApplicationsAsync(applications.ToArray(), cancellationToken);
                }

                if (keys.Length > 0)
                {
                    await LoadInstancesAsync(keys, cancellationToken);
                }
            }
        }
        catch (DbException e)
        {
            failure = e;
            metrics.DatabaseError("reload");
            LogReloadFailed(logger, e);
            // Keep the request: it is retried with the next batch (the feed reconnects and
            // reloads everything anyway if the database was lost).
            if (!all)
            {
                foreach (var request in batch)
                {
                    _requests.Writer.TryWrite(request with { Done = null });
                }
            }
        }

        if (failure is null)
        {
            foreach (var request in batch)
            {
                if (request.Backend is { } backend)
                {
                    Loaded(backend);
                }
            }
        }

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

        if (failure is not null)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), time, cancellationToken);
        }
    }

    private async Task LoadAllAsync(CancellationToken cancellationToken)
    {
        var loaded = await QueryAsync(SelectColumns, null, cancellationToken);
        var before = state.Applications;
        state.ReplaceAll(loaded.Values);
        LoadedEverything();
        metrics.Reloaded(all: true);
        var changed = before.Keys.Union(loaded.Keys, StringComparer.Ordinal)
            .Where(a => !(loaded.TryGetValue(a, out var now) && now.SameContentAs(before.GetValueOrDefault(a))))
            .ToArray();
        hub.ApplicationsChanged(changed);
        LogLoadedAll(logger, loaded.Count, loaded.Values.Sum(s => s.Instances.Length));
    }

    private async Task LoadApplicationsAsync(string[] applications, CancellationToken cancellationToken)
    {
        var loaded = await QueryAsync(SelectColumns + " WHERE i.application = ANY(@applications)", command =>
            command.Parameters.Add(new NpgsqlParameter<string[]>("applications", applications)), cancellationToken);
        var snapshots = applications.Select(a => loaded.GetValueOrDefault(a) ?? new ApplicationSnapshot(a, [])).ToArray();
        var changed = snapshots
            .Where(s => !(s.SameContentAs(state.Get(s.Application)) || (s.Instances.Length == 0 && state.Get(s.Application) is null)))
            .Select(s => s.Application)
            .ToArray();
        state.Replace(snapshots);
        metrics.Reloaded(all: false);
        hub.ApplicationsChanged(changed);
    }

    /// <summary>Reloads single rows and merges them into their applications' snapshots.</summary>
    private async Task LoadInstancesAsync(InstanceKey[] keys, CancellationToken cancellationToken)
    {
        var loaded = await QueryAsync(
            SelectColumns + """
                 JOIN unnest(@applications, @protocols, @addrs) AS k(application, protocol, addr)
                   ON i.application = k.application AND i.protocol = k.protocol AND i.addr = k.addr
                """,
            command => InstanceKeys.AddParameters(command.Parameters, keys),
            cancellationToken);
        var snapshots = new List<ApplicationSnapshot>();
        var changed = new List<string>();
        foreach (var group in keys.GroupBy(k => k.Application, StringComparer.Ordinal))
        {
            var before = state.Get(group.Key) ?? new ApplicationSnapshot(group.Key, []);
            var rows = loaded.GetValueOrDefault(group.Key)?.Instances ?? [];
            var after = before.With(group, rows);
            snapshots.Add(after);
            // Revisions move exactly when what a consumer sees (or the TTL) changes.
            if (group.Any(key => before.Find(key)?.Revision != after.Find(key)?.Revision))
            {
                changed.Add(group.Key);
            }
        }

        state.Replace(snapshots);
        metrics.Reloaded(all: false);
        hub.ApplicationsChanged(changed);
    }

    private async Task<Dictionary<string, ApplicationSnapshot>> QueryAsync(string sql, Action<NpgsqlCommand>? parameters, CancellationToken cancellationToken)
    {
        await using var command = database.DataSource.CreateCommand(sql);
        parameters?.Invoke(command);

        var rows = new Dictionary<string, List<Instance>>(StringComparer.Ordinal);
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                var key = new InstanceKey(reader.GetString(0), reader.GetString(1), reader.GetString(2));
                var instance = new Instance(key, MetaJson.Parse(reader.GetString(3)), reader.GetInt32(4),
                    new DateTimeOffset(reader.GetDateTime(5), TimeSpan.Zero), reader.GetInt64(6));
                if (!rows.TryGetValue(key.Application, out var list))
                {
                    rows[key.Application] = list = [];
                }

                list.Add(instance);
            }
        }

        var snapshots = rows.ToDictionary(p => p.Key, p => new ApplicationSnapshot(p.Key, p.Value.ToArray()), StringComparer.Ordinal);
        foreach (var snapshot in snapshots.Values)
        {
            sweeps.Consider(snapshot.EarliestExpiry);
        }

        return snapshots;
    }

    /// <summary>NOTIFY is a hint, not a log: compare count and max(revision) per application and reload what differs.</summary>
    private async Task CheckConsistencyAsync(CancellationToken cancellationToken)
    {
        try
        {
            await using var command = database.DataSource.CreateCommand(
                "SELECT application, count(*)::int, max(revision) FROM instances GROUP BY application");
            var inDatabase = new Dictionary<string, (int Count, long Revision)>(StringComparer.Ordinal);
            await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
            {
                while (await reader.ReadAsync(cancellationToken))
                {
                    inDatabase[reader.GetString(0)] = (reader.GetInt32(1), reader.GetInt64(2));
                }
            }

            var memory = state.Applications;
            var stale = inDatabase
                .Where(p => !memory.TryGetValue(p.Key, out var s) || s.Instances.Length != p.Value.Count || s.MaxRevision != p.Value.Revision)
                .Select(p => p.Key)
                .Concat(memory.Keys.Where(a => !inDatabase.ContainsKey(a)))
                .ToArray();
            if (stale.Length > 0)
            {
                LogInconsistent(logger, stale.Length);
                await LoadApplicationsAsync(stale, cancellationToken);
            }
        }
        catch (DbException e)
        {
            metrics.DatabaseError("consistency_check");
            LogReloadFailed(logger, e);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Loaded the whole registry: {Applications} applications, {Instances} instances")]
    private static partial void LogLoadedAll(ILogger logger, int applications, int instances);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Reloading from the database failed; serving the last snapshot and retrying")]
    private static partial void LogReloadFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Consistency check found {Applications} applications out of date (a notification was lost); reloaded them")]
    private static partial void LogInconsistent(ILogger logger, int applications);
}

/// <summary>A batch this node committed, until the loader has applied its own notifications.</summary>
internal sealed class OwnCommit(int notifications)
{
    /// <summary>Notifications not yet loaded; only the loader's loop touches it.</summary>
    public int Remaining { get; set; } = notifications;

    /// <summary>Set when the batch did not commit, so it sends nothing.</summary>
    public bool Abandoned { get; set; }

    public TaskCompletionSource Applied { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}
