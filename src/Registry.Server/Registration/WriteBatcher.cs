// Over 300 lines on purpose: the group commit's queue, its one transaction and each request's answer form one unit (other branches extend it; split after they merge).
using System.Data.Common;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.ChangeFeed;
using Registry.Edge;
using Registry.Leases;
using Registry.Model;
using Registry.Probes;
using Registry.State;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Registration;

internal enum WriteStatus
{
    Created,
    Replaced,
    Removed,
    NotFound,
}

/// <summary>
/// How a write ended; for a registration, its lease and the row's revision as committed.
/// <paramref name="Reflected"/>: the node's memory had caught up with the write when it was
/// answered (false only when the database could not be read back then).
/// </summary>
internal readonly record struct WriteResult(WriteStatus Status, DateTimeOffset ExpiresAt, long Revision = 0, bool Reflected = false);

/// <summary>A registration or unregistration waiting for its batch to commit.</summary>
internal abstract class WriteCommand(InstanceKey key)
{
    public InstanceKey Key { get; } = key;

    public TaskCompletionSource<WriteResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

internal sealed class RegisterCommand(Provider provider, int ttlSeconds, ProbeSpec? probe = null, bool session = false) : WriteCommand(provider.Key)
{
    public Provider Provider { get; } = provider;

    public int TtlSeconds { get; } = ttlSeconds;

    /// <summary>How the registry probes the instance; null turns probing off.</summary>
    public ProbeSpec? Probe { get; } = probe;

    /// <summary>
    /// A session's registration: it always takes a fresh revision, so that each holder of the
    /// instance is told apart (the one it replaces sees a newer revision; its removal, made
    /// conditional on its own revision, cannot take this one's row).
    /// </summary>
    public bool Session { get; } = session;
}

/// <summary>Removes an instance; with <paramref name="expectedRevision"/>, only while its row still holds that revision.</summary>
internal sealed class UnregisterCommand(InstanceKey key, long? expectedRevision = null) : WriteCommand(key)
{
    /// <summary>The revision a session registered: its removal leaves a newer registration alone, whatever its meta.</summary>
    public long? ExpectedRevision { get; } = expectedRevision;
}

/// <summary>The database could not take a write (or the node is overloaded or stopping): answer 503.</summary>
internal sealed class WriteUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>The client has as many writes waiting on this node as it may (<see cref="LimitsOptions.MaxWritesPerClient"/>): answer 429.</summary>
internal sealed class TooManyWritesException(string message) : Exception(message);

/// <summary>
/// Group commit. Commits that notify serialise on PostgreSQL's notification-queue lock, so
/// the writes that arrive together share one transaction: multi-row statements and one
/// <c>pg_notify</c> per changed application. Each request is answered after its batch has
/// committed, with the status and lease it would have had alone: a batch writes each instance
/// once, so writes to the same instance go in successive batches, in their arrival order, while
/// other instances' writes are taken around them. An identical re-registration renews the lease and notifies nobody
/// (unless a session is involved: see <see cref="RegisterCommand.Session"/>).
/// </summary>
internal sealed partial class WriteBatcher(
    RegistryDatabase database,
    RegistryLoader loader,
    RegistryState state,
    ChangeFeedListener feed,
    TimeProvider time,
    LeaseRenewer renewer,
    RegistryMetrics metrics,
    IOptions<WriteOptions> options,
    IOptions<LimitsOptions> limits,
    ILogger<WriteBatcher> logger) : BackgroundService
{
    private const int MaxAttempts = 3;

    // The queue's own bound is the total: this one keeps a client from filling it (one looping client would otherwise
    // have every other client's writes refused).
    private readonly ClientShares _queued = new(limits.Value.MaxWritesPerClient, int.MaxValue);

    /// <summary>How long an acknowledgement waits for the batch's own notifications before reloading its rows itself.</summary>
    private static readonly TimeSpan OwnNotificationWait = TimeSpan.FromSeconds(1);

    private readonly SetAsideWrites _setAside = new();

    private readonly Channel<WriteCommand> _queue = Channel.CreateBounded<WriteCommand>(
        new BoundedChannelOptions(options.Value.MaxQueueLength) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });

    /// <summary>Queues a write of <paramref name="client"/> (as <see cref="Clients"/> counts it), counted against its share until answered.</summary>
    /// <exception cref="TooManyWritesException">The client has as many writes waiting as it may.</exception>
    /// <exception cref="WriteUnavailableException">The database cannot take it now.</exception>
    public async Task<WriteResult> SubmitAsync(WriteCommand command, string client)
    {
        if (_queued.TryEnter(client) is not null)
        {
            metrics.LimitReached("writes_per_client");
            throw new TooManyWritesException(
                "This client has as many registrations and unregistrations waiting on this node as it may (Registry:Limits:MaxWritesPerClient); retry shortly.");
        }

        try
        {
            return await SubmitAsync(command);
        }
        finally
        {
            _queued.Leave(client);
        }
    }

    /// <summary>
    /// Queues a write; the task completes once its batch has committed. A client that leaves
    /// does not cancel its write: once queued it commits or fails whole, within the statement
    /// timeout.
    /// </summary>
    /// <exception cref="WriteUnavailableException">The database cannot take it now.</exception>
    public Task<WriteResult> SubmitAsync(WriteCommand command)
    {
        if (!_queue.Writer.TryWrite(command))
        {
            throw new WriteUnavailableException("The registry has too many writes queued; retry shortly.");
        }

        metrics.WritesQueued(1);
        return command.Done.Task;
    }

    /// <summary>
    /// Queues a write as <see cref="SubmitAsync(WriteCommand)"/> does, but waits up to <paramref name="wait"/> for room
    /// in a full queue rather than failing at once: for a write that has no client to retry it (a closed session's
    /// removal; a fleet scaled down closes thousands at once, and the queue drains in moments).
    /// </summary>
    /// <exception cref="WriteUnavailableException">No room came in time, or the database cannot take it now.</exception>
    public async Task<WriteResult> SubmitWhenRoomAsync(WriteCommand command, TimeSpan wait)
    {
        if (!_queue.Writer.TryWrite(command))
        {
            using var deadline = new CancellationTokenSource(wait, time);
            try
            {
                await _queue.Writer.WriteAsync(command, deadline.Token);
            }
            catch (OperationCanceledException)
            {
                throw new WriteUnavailableException($"The registry had too many writes queued for {wait.TotalSeconds:0.#} s.");
            }
            catch (ChannelClosedException)
            {
                throw new WriteUnavailableException("The registry node is shutting down; retry on another node.");
            }
        }

        metrics.WritesQueued(1);
        return await command.Done.Task;
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var reader = _queue.Reader;
        var batch = new List<WriteCommand>(options.Value.MaxBatchSize);
        // The instances the batch writes: each one once (see below).
        var keys = new HashSet<InstanceKey>();
        try
        {
            while (_setAside.Count > 0 || await reader.WaitToReadAsync(stoppingToken))
            {
                keys.Clear();
                // A batch writes only one row per instance: each write is answered with the revision and lease of its
                // own row (a session holds on to it). A second write to an instance is set aside for a later batch,
                // and so is every later one to it, so each instance's writes keep their arrival order (batches commit
                // in turn), while the other instances' writes go on being taken: one client writing one instance
                // over and over holds nobody else's write more than a batch. What is set aside is taken first, one
                // write an instance; it is bounded by the queue's own length (the clients' shares count it until answered).
                _setAside.TakeInto(batch, keys, options.Value.MaxBatchSize);
                while (batch.Count < options.Value.MaxBatchSize && _setAside.Count < options.Value.MaxQueueLength && reader.TryRead(out var command))
                {
                    if (_setAside.Holds(command.Key) || !keys.Add(command.Key))
                    {
                        _setAside.Add(command);
                    }
                    else
                    {
                        batch.Add(command);
                    }
                }

                metrics.WritesQueued(-batch.Count);
                await ExecuteBatchAsync(batch, stoppingToken);
                // Answered (or being acknowledged): a stop while waiting for the next fails none of these.
                batch.Clear();
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Nothing more is taken (a write waiting for room would otherwise wait for an answer nobody gives).
            _queue.Writer.TryComplete();
            metrics.WritesQueued(-_setAside.Count);
            batch.AddRange(_setAside.TakeAll());
            while (reader.TryRead(out var command))
            {
                metrics.WritesQueued(-1);
                batch.Add(command);
            }

            Fail(batch, new WriteUnavailableException("The registry node is shutting down; retry on another node."));
        }
    }

    private async Task ExecuteBatchAsync(List<WriteCommand> batch, CancellationToken cancellationToken)
    {
        Committed committed;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                committed = await CommitAsync(batch, cancellationToken);
                break;
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure && attempt < MaxAttempts)
            {
                // Another node's batch locked the same rows in another order: run ours again.
            }
            catch (DbException e)
            {
                metrics.DatabaseError("write");
                LogWriteFailed(logger, batch.Count, e);
                var unavailable = new WriteUnavailableException("The database cannot take the write now; retry shortly.", e);
                Fail(batch, unavailable);
                if (e is not PostgresException)
                {
                    // Not a statement's error but the database out of reach (refused, reset, or a
                    // timeout on a dead route): every write queued behind this batch would wait as
                    // long in turn, so they are answered now; the next ones try afresh.
                    FailQueued(unavailable);
                }

                return;
            }
        }

        metrics.WriteBatch();
        foreach (var (key, lease) in committed.Leases)
        {
            renewer.Committed(key, lease.Revision, lease.ExpiresAt);
        }

        // Not awaited: the next batch commits while this one's applications reload.
        _ = AcknowledgeAsync(batch.ToArray(), committed, cancellationToken);
    }

    private void FailQueued(WriteUnavailableException exception)
    {
        metrics.WritesQueued(-_setAside.Count);
        Fail(_setAside.TakeAll(), exception);
        while (_queue.Reader.TryRead(out var command))
        {
            metrics.WritesQueued(-1);
            command.Done.TrySetException(exception);
        }
    }

    private static void Fail(List<WriteCommand> batch, WriteUnavailableException exception)
    {
        foreach (var command in batch)
        {
            command.Done.TrySetException(exception);
        }
    }

    /// <summary>Answers a committed batch once the node's memory reflects it (a node reflects its own acknowledged writes at once).</summary>
    private async Task AcknowledgeAsync(WriteCommand[] batch, Committed committed, CancellationToken cancellationToken)
    {
        var reflected = false;
        try
        {
            await ReflectAsync(committed, cancellationToken);
            reflected = true;
        }
        catch (Exception e) when (e is DbException or OperationCanceledException)
        {
            // Committed all the same; the notification brings the reload once the database answers.
        }
#pragma warning disable CA1031 // The batch committed: its requests are answered whatever went wrong here.
        catch (Exception e)
#pragma warning restore CA1031
        {
            LogReflectFailed(logger, e);
        }

        for (var i = 0; i < batch.Length; i++)
        {
            var status = committed.Statuses[i];
            if (batch[i] is RegisterCommand)
            {
                metrics.Registered(status == WriteStatus.Created);
            }
            else
            {
                metrics.Unregistered(status == WriteStatus.Removed);
            }

            var lease = committed.Leases.GetValueOrDefault(batch[i].Key);
            batch[i].Done.TrySetResult(new WriteResult(status, lease.ExpiresAt, lease.Revision, reflected));
        }
    }

    /// <summary>
    /// Waits until memory reflects the batch: normally through the batch's own notifications
    /// (so its rows are loaded once on this node, not twice), else by reloading them directly;
    /// and rows it left unchanged that memory does not hold as written are reloaded directly.
    /// </summary>
    private async Task ReflectAsync(Committed committed, CancellationToken cancellationToken)
    {
        var unseen = loader.ReloadAsync(committed.Unseen);
        await ReflectChangedAsync(committed, cancellationToken);
        await unseen.WaitAsync(cancellationToken);
    }

    private async Task ReflectChangedAsync(Committed committed, CancellationToken cancellationToken)
    {
        if (committed.Own is { } own && feed.IsListening)
        {
            try
            {
                await own.Applied.Task.WaitAsync(OwnNotificationWait, time, cancellationToken);
                return;
            }
            catch (TimeoutException)
            {
                // Slow or lost (the feed may be reconnecting): load the rows directly.
            }
        }

        if (committed.Own is { } abandoned)
        {
            loader.Abandon(abandoned);
        }

        await loader.ReloadAsync(committed.Changed).WaitAsync(cancellationToken);
    }

    /// <summary>
    /// A committed batch: each request's status, the leases written, the rows whose content changed, and the
    /// rows it registered again unchanged (no revision drawn, nobody notified) that memory does not hold at the
    /// revision written (<c>Unseen</c>: another node's change to them is still on its way here, or was lost
    /// with a connection), and the batch's own notifications to wait for.
    /// </summary>
    private sealed record Committed(
        WriteStatus[] Statuses, Dictionary<InstanceKey, (long Revision, DateTimeOffset ExpiresAt)> Leases, InstanceKey[] Changed, InstanceKey[] Unseen, OwnCommit? Own);

    /// <summary>
    /// Commits the batch as one statement in its own implicit transaction: one round trip, no
    /// separate lock, BEGIN or COMMIT. The batch holds each instance once; the statement says
    /// whether each row existed and whether what consumers see changed, which gives every
    /// request its status.
    /// </summary>
    private async Task<Committed> CommitAsync(List<WriteCommand> batch, CancellationToken cancellationToken)
    {
        var byKey = Comparer<InstanceKey>.Create(InstanceKey.CompareOrdinal);
        var upserts = batch.OfType<RegisterCommand>().OrderBy(c => c.Key, byKey).ToArray();
        var deletes = batch.OfType<UnregisterCommand>().OrderBy(c => c.Key, byKey).ToArray();

        // Without deletes the statement has no scan to choose, so its plan is made once per connection.
        var source = deletes.Length == 0 ? database.PlannedOnceDataSource : database.DataSource;
        await using var connection = await source.OpenConnectionAsync(cancellationToken);
        var own = loader.Expect();
        Written written;
        try
        {
            written = await WriteAsync(connection, upserts, deletes, own.Tag, cancellationToken);
        }
        catch
        {
            // Failed before or at commit; if it did commit after all, its notifications are
            // loaded as another node's would be.
            loader.Settled(own, null);
            throw;
        }

        loader.Settled(own, written.Changes);

        var statuses = batch.Select(command => (command is RegisterCommand, written.ExistedBefore.GetValueOrDefault(command.Key)) switch
        {
            (true, true) => WriteStatus.Replaced,
            (true, false) => WriteStatus.Created,
            (false, true) => WriteStatus.Removed,
            (false, false) => WriteStatus.NotFound,
        }).ToArray();

        var changed = written.Changes.Values.SelectMany(c => c.Keys).ToArray();
        var unseen = written.Unchanged?.Where(key => state.Find(key)?.Revision != written.Leases[key].Revision).ToArray() ?? [];
        return new Committed(statuses, written.Leases, changed, unseen, changed.Length > 0 ? own : null);
    }

    private static readonly string UpsertStatement = Statement(deletes: false);

    private static readonly string UpsertAndDeleteStatement = Statement(deletes: true);

    /// <summary>
    /// The batch as one statement. An identical re-registration keeps its revision: it renews
    /// the lease and notifies nobody. A session's registration, and any registration of a row
    /// a session held, takes a fresh one whatever the meta: the holder changed, and the session
    /// it replaced (on any node) must hear of it. So does a probed registration: its probing
    /// node counts failed probes against one registration, and a provider that registers again
    /// starts a count of its own (the answers' versions, taken from content, do not move). A removal with an expected revision deletes
    /// only a row that still holds it. The proposed revisions are drawn once (the CTE is
    /// materialised), so a row whose revision is the proposed one was inserted or changed.
    /// </summary>
    private static string Statement(bool deletes) => $"""
        WITH proposed AS MATERIALIZED (
            SELECT u.application, u.protocol, u.addr, u.meta::jsonb AS meta, u.ttl, u.session, u.probe_kind, u.probe_path, u.probe_interval,
                   u.probe_credential, nextval('instance_revision') AS revision
              FROM unnest(@applications, @protocols, @addrs, @metas, @ttls, @sessions, @probe_kinds, @probe_paths, @probe_intervals, @probe_credentials)
                   AS u(application, protocol, addr, meta, ttl, session, probe_kind, probe_path, probe_interval, probe_credential)),
        upserted AS (
            INSERT INTO instances AS i (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at, revision,
                                        session_held, probe_kind, probe_path, probe_interval_seconds, probe_credential)
            SELECT p.application, p.protocol, p.addr, p.meta, p.ttl, clock_timestamp() + p.ttl * interval '1 second', clock_timestamp(), p.revision,
                   p.session, p.probe_kind, p.probe_path, p.probe_interval, p.probe_credential
              FROM proposed p
             ORDER BY p.application, p.protocol, p.addr
            ON CONFLICT (application, protocol, addr) DO UPDATE
               SET meta = excluded.meta,
                   ttl_seconds = excluded.ttl_seconds,
                   expires_at = excluded.expires_at,
                   -- Consumers do not see how an instance is probed: no new revision for it.
                   probe_kind = excluded.probe_kind,
                   probe_path = excluded.probe_path,
                   probe_interval_seconds = excluded.probe_interval_seconds,
                   probe_credential = excluded.probe_credential,
                   session_held = excluded.session_held,
                   revision = CASE WHEN NOT i.session_held AND NOT excluded.session_held AND excluded.probe_kind IS NULL
                                        AND i.meta = excluded.meta AND i.ttl_seconds = excluded.ttl_seconds
                                   THEN i.revision ELSE excluded.revision END
            RETURNING i.application, i.protocol, i.addr, i.expires_at, i.revision, i.xmax = 0 AS inserted),
        {(deletes ? """
        deleted AS (
            DELETE FROM instances i
             USING unnest(@gone_applications, @gone_protocols, @gone_addrs, @gone_revisions) AS k(application, protocol, addr, revision)
             WHERE i.application = k.application AND i.protocol = k.protocol AND i.addr = k.addr
               AND (k.revision IS NULL OR i.revision = k.revision)
            RETURNING i.application, i.protocol, i.addr),
        """ : "")}
        rows AS (
            SELECT u.application, u.protocol, u.addr, u.expires_at, u.revision, u.inserted, u.revision = p.revision AS changed
              FROM upserted u JOIN proposed p USING (application, protocol, addr)
        {(deletes ? """
            UNION ALL
            SELECT d.application, d.protocol, d.addr, NULL, NULL, false, true FROM deleted d
        """ : "")}),
        -- One notification per changed application, tagged as this node's batch (see Announcement).
        notified AS (
            SELECT {Announcement.NotifySql("application", Announcement.KeysSql, "@tag")}
              FROM rows WHERE changed GROUP BY application)
        SELECT r.application, r.protocol, r.addr, r.expires_at, r.revision, r.inserted, r.changed
          FROM rows r CROSS JOIN (SELECT count(*) FROM notified) AS n
        """;

    /// <summary>What the statement said of each row: whether it existed, the lease written, what changed, and which registrations changed nothing.</summary>
    private sealed record Written(
        Dictionary<InstanceKey, bool> ExistedBefore,
        Dictionary<InstanceKey, (long Revision, DateTimeOffset ExpiresAt)> Leases,
        Dictionary<string, Changes> Changes,
        List<InstanceKey>? Unchanged);

    private static async Task<Written> WriteAsync(
        NpgsqlConnection connection, RegisterCommand[] upserts, UnregisterCommand[] deletes, string tag, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(deletes.Length == 0 ? UpsertStatement : UpsertAndDeleteStatement, connection);
        var keys = upserts.Select(c => c.Key).ToArray();
        InstanceKeys.AddParameters(command.Parameters, keys);
        command.Parameters.Add(new NpgsqlParameter<string[]>("metas", upserts.Select(c => MetaJson.Serialize(c.Provider.Meta)).ToArray()));
        command.Parameters.Add(new NpgsqlParameter<int[]>("ttls", upserts.Select(c => c.TtlSeconds).ToArray()));
        command.Parameters.Add(new NpgsqlParameter<bool[]>("sessions", upserts.Select(c => c.Session).ToArray()));
        command.Parameters.Add(new NpgsqlParameter<string?[]>("probe_kinds", upserts.Select(c => c.Probe?.Kind).ToArray()));
        command.Parameters.Add(new NpgsqlParameter<string?[]>("probe_paths", upserts.Select(c => c.Probe?.Path).ToArray()));
        command.Parameters.Add(new NpgsqlParameter<int?[]>("probe_intervals", upserts.Select(c => c.Probe?.IntervalSeconds).ToArray()));
        command.Parameters.Add(new NpgsqlParameter<string?[]>("probe_credentials", upserts.Select(c => c.Probe?.Credential).ToArray()));
        if (deletes.Length > 0)
        {
            InstanceKeys.AddParameters(command.Parameters, deletes.Select(c => c.Key).ToArray(), "gone_");
            command.Parameters.Add(new NpgsqlParameter<long?[]>("gone_revisions", deletes.Select(c => c.ExpectedRevision).ToArray()));
        }

        command.Parameters.Add(new NpgsqlParameter<string>("tag", tag));

        var existed = new Dictionary<InstanceKey, bool>();
        var leases = new Dictionary<InstanceKey, (long Revision, DateTimeOffset ExpiresAt)>();
        var changes = new Dictionary<string, Changes>(StringComparer.Ordinal);
        List<InstanceKey>? unchanged = null;
        var sent = upserts.ToDictionary(c => c.Key);
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                var key = new InstanceKey(reader.GetString(0), reader.GetString(1), reader.GetString(2));
                var upserted = !reader.IsDBNull(3);
                existed[key] = !upserted || !reader.GetBoolean(5);
                Instance? row = null;
                if (upserted)
                {
                    // The row holds what this batch sent; the database adds the lease and the revision.
                    var expiresAt = new DateTimeOffset(reader.GetDateTime(3), TimeSpan.Zero);
                    var revision = reader.GetInt64(4);
                    leases[key] = (revision, expiresAt);
                    var register = sent[key];
                    row = new Instance(key, register.Provider.Meta, register.TtlSeconds, expiresAt, revision);
                }

                if (reader.GetBoolean(6))
                {
                    if (!changes.TryGetValue(key.Application, out var application))
                    {
                        changes[key.Application] = application = new Changes();
                    }

                    application.Add(key, row);
                }
                else if (upserted)
                {
                    (unchanged ??= []).Add(key);
                }
            }

            // The implicit transaction commits at the end of the statement: only once the reader
            // has closed without an error has the batch committed.
            await reader.CloseAsync();
        }

        return new Written(existed, leases, changes, unchanged);
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "A committed batch could not be loaded into memory; answering it anyway (the consistency check catches up)")]
    private static partial void LogReflectFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "A batch of {Count} writes failed; answered 503")]
    private static partial void LogWriteFailed(ILogger logger, int count, Exception exception);
}
