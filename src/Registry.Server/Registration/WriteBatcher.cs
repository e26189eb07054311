using System.Data.Common;
using System.Threading.Channels;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.ChangeFeed;
using Registry.Leases;
using Registry.Model;
using Registry.Operations;
using Registry.Storage;

namespace Registry.Registration;

internal enum WriteStatus
{
    Created,
    Replaced,
    Removed,
    NotFound,
}

internal readonly record struct WriteResult(WriteStatus Status, DateTimeOffset ExpiresAt);

/// <summary>A registration or unregistration waiting for its batch to commit.</summary>
internal abstract class WriteCommand(InstanceKey key)
{
    public InstanceKey Key { get; } = key;

    public TaskCompletionSource<WriteResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
}

internal sealed class RegisterCommand(Provider provider, int ttlSeconds) : WriteCommand(provider.Key)
{
    public Provider Provider { get; } = provider;

    public int TtlSeconds { get; } = ttlSeconds;
}

internal sealed class UnregisterCommand(InstanceKey key) : WriteCommand(key);

/// <summary>The database could not take a write (or the node is overloaded or stopping): answer 503.</summary>
internal sealed class WriteUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Group commit. Commits that notify serialise on PostgreSQL's notification-queue lock, so
/// the writes that arrive together share one transaction: multi-row statements and one
/// <c>pg_notify</c> per changed application. Each request is answered after its batch has
/// committed, with the status it would have had alone; writes to the same instance keep
/// their arrival order. An identical re-registration renews the lease and notifies nobody.
/// </summary>
internal sealed partial class WriteBatcher(
    RegistryDatabase database,
    RegistryLoader loader,
    ChangeFeedListener feed,
    TimeProvider time,
    LeaseRenewer renewer,
    RegistryMetrics metrics,
    IOptions<WriteOptions> options,
    ILogger<WriteBatcher> logger) : BackgroundService
{
    private const int MaxAttempts = 3;

    /// <summary>How long an acknowledgement waits for the batch's own notifications before reloading its rows itself.</summary>
    private static readonly TimeSpan OwnNotificationWait = TimeSpan.FromSeconds(1);

    private readonly Channel<WriteCommand> _queue = Channel.CreateBounded<WriteCommand>(
        new BoundedChannelOptions(options.Value.MaxQueueLength) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });

    /// <summary>Queues a write and waits for its batch to commit.</summary>
    /// <exception cref="WriteUnavailableException">The database cannot take it now.</exception>
    public async Task<WriteResult> SubmitAsync(WriteCommand command, CancellationToken cancellationToken)
    {
        if (!_queue.Writer.TryWrite(command))
        {
            throw new WriteUnavailableException("The registry has too many writes queued; retry shortly.");
        }

        // A client that leaves does not cancel its write: once queued it commits or fails whole.
        return await command.Done.Task.WaitAsync(cancellationToken);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var reader = _queue.Reader;
        var batch = new List<WriteCommand>(options.Value.MaxBatchSize);
        try
        {
            while (await reader.WaitToReadAsync(stoppingToken))
            {
                batch.Clear();
                while (batch.Count < options.Value.MaxBatchSize && reader.TryRead(out var command))
                {
                    batch.Add(command);
                }

                await ExecuteBatchAsync(batch, stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            var stopping = new WriteUnavailableException("The registry node is shutting down; retry on another node.");
            foreach (var command in batch)
            {
                command.Done.TrySetException(stopping);
            }

            while (reader.TryRead(out var command))
            {
                command.Done.TrySetException(stopping);
            }
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
                foreach (var command in batch)
                {
                    command.Done.TrySetException(unavailable);
                }

                return;
            }
        }

        metrics.WriteBatch();
        foreach (var (key, expiresAt) in committed.Expiries)
        {
            renewer.Committed(key, expiresAt);
        }

        // Not awaited: the next batch commits while this one's applications reload.
        _ = AcknowledgeAsync(batch.ToArray(), committed, cancellationToken);
    }

    /// <summary>Answers a committed batch once the node's memory reflects it (a node reflects its own acknowledged writes at once).</summary>
    private async Task AcknowledgeAsync(WriteCommand[] batch, Committed committed, CancellationToken cancellationToken)
    {
        try
        {
            await ReflectAsync(committed, cancellationToken);
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

            batch[i].Done.TrySetResult(new WriteResult(status, committed.Expiries.GetValueOrDefault(batch[i].Key)));
        }
    }

    /// <summary>
    /// Waits until memory reflects the batch: normally through the batch's own notifications
    /// (so its rows are loaded once on this node, not twice), else by reloading them directly.
    /// </summary>
    private async Task ReflectAsync(Committed committed, CancellationToken cancellationToken)
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

        await loader.ReloadAsync(committed.Changed).WaitAsync(cancellationToken);
    }

    private sealed record Committed(WriteStatus[] Statuses, Dictionary<InstanceKey, DateTimeOffset> Expiries, InstanceKey[] Changed, OwnCommit? Own);

    private readonly record struct Stored(Meta Meta, int TtlSeconds);

    private async Task<Committed> CommitAsync(List<WriteCommand> batch, CancellationToken cancellationToken)
    {
        var keys = batch.Select(c => c.Key).Distinct().Order(Comparer<InstanceKey>.Create(InstanceKey.CompareOrdinal)).ToArray();
        await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);

        var initial = await LockAsync(connection, transaction, keys, cancellationToken);

        // Play the batch in arrival order over what the database holds.
        var current = new Dictionary<InstanceKey, Stored>(initial);
        var statuses = new WriteStatus[batch.Count];
        for (var i = 0; i < batch.Count; i++)
        {
            switch (batch[i])
            {
                case RegisterCommand register:
                    statuses[i] = current.ContainsKey(register.Key) ? WriteStatus.Replaced : WriteStatus.Created;
                    current[register.Key] = new Stored(register.Provider.Meta, register.TtlSeconds);
                    break;
                case UnregisterCommand unregister:
                    statuses[i] = current.Remove(unregister.Key) ? WriteStatus.Removed : WriteStatus.NotFound;
                    break;
            }
        }

        var registered = batch.OfType<RegisterCommand>().Select(c => c.Key).ToHashSet();
        var upserts = keys.Where(k => registered.Contains(k) && current.ContainsKey(k)).ToArray();
        var deletes = keys.Where(k => initial.ContainsKey(k) && !current.ContainsKey(k)).ToArray();
        var changed = keys
            .Where(k =>
            {
                var had = initial.TryGetValue(k, out var before);
                var has = current.TryGetValue(k, out var after);
                return had != has || (had && !Same(before, after));
            })
            .ToArray();

        var payloads = changed.GroupBy(k => k.Application, StringComparer.Ordinal).Select(g => Announcement.For(g.Key, g)).ToArray();
        var own = payloads.Length > 0 ? loader.Expect(connection.ProcessID, payloads.Length) : null;
        Dictionary<InstanceKey, DateTimeOffset> expiries;
        try
        {
            expiries = await WriteAsync(connection, transaction, upserts, deletes, current, payloads, cancellationToken);
        }
        catch
        {
            if (own is not null)
            {
                own.Abandoned = true; // rolled back: it sends no notification
            }

            throw;
        }

        // A failure from here on may or may not have committed, so the batch's entry stays; a
        // connection that fails at commit is broken and not reused, so nothing else waits behind it.
        await transaction.CommitAsync(cancellationToken);
        return new Committed(statuses, expiries, changed, own);
    }

    /// <summary>The batch's upserts, deletions and notifications as one round trip; returns the new expiries.</summary>
    private static async Task<Dictionary<InstanceKey, DateTimeOffset>> WriteAsync(
        NpgsqlConnection connection,
        NpgsqlTransaction transaction,
        InstanceKey[] upserts,
        InstanceKey[] deletes,
        Dictionary<InstanceKey, Stored> rows,
        string[] payloads,
        CancellationToken cancellationToken)
    {
        var expiries = new Dictionary<InstanceKey, DateTimeOffset>();
        await using var statements = new NpgsqlBatch(connection, transaction);
        if (upserts.Length > 0)
        {
            statements.BatchCommands.Add(Upsert(upserts, rows));
        }

        if (deletes.Length > 0)
        {
            statements.BatchCommands.Add(Delete(deletes));
        }

        if (payloads.Length > 0)
        {
            // One notification per changed application, naming the changed instances.
            var notify = new NpgsqlBatchCommand("SELECT pg_notify(@channel, p) FROM unnest(@payloads) AS p");
            notify.Parameters.AddWithValue("channel", Schema.ChangeChannel);
            notify.Parameters.Add(new NpgsqlParameter<string[]>("payloads", payloads));
            statements.BatchCommands.Add(notify);
        }

        if (statements.BatchCommands.Count == 0)
        {
            return expiries;
        }

        await using var reader = await statements.ExecuteReaderAsync(cancellationToken);
        if (upserts.Length > 0)
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                var key = new InstanceKey(reader.GetString(0), reader.GetString(1), reader.GetString(2));
                expiries[key] = new DateTimeOffset(reader.GetDateTime(3), TimeSpan.Zero);
            }
        }

        return expiries;
    }

    private static bool Same(Stored before, Stored after) => before.TtlSeconds == after.TtlSeconds && before.Meta.Equals(after.Meta);

    /// <summary>Locks the rows of the batch's keys (in key order, to keep deadlocks between nodes rare) and reads them.</summary>
    private static async Task<Dictionary<InstanceKey, Stored>> LockAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, InstanceKey[] keys, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(
            """
            SELECT i.application, i.protocol, i.addr, i.meta::text, i.ttl_seconds
              FROM instances i
              JOIN unnest(@applications, @protocols, @addrs) AS k(application, protocol, addr)
                ON i.application = k.application AND i.protocol = k.protocol AND i.addr = k.addr
             ORDER BY i.application, i.protocol, i.addr
               FOR UPDATE OF i
            """, connection, transaction);
        InstanceKeys.AddParameters(command.Parameters, keys);
        var stored = new Dictionary<InstanceKey, Stored>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var key = new InstanceKey(reader.GetString(0), reader.GetString(1), reader.GetString(2));
            stored[key] = new Stored(MetaJson.Parse(reader.GetString(3)), reader.GetInt32(4));
        }

        return stored;
    }

    private static NpgsqlBatchCommand Upsert(InstanceKey[] keys, Dictionary<InstanceKey, Stored> rows)
    {
        var command = new NpgsqlBatchCommand(
            """
            INSERT INTO instances AS i (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
            SELECT u.application, u.protocol, u.addr, u.meta::jsonb, u.ttl,
                   clock_timestamp() + u.ttl * interval '1 second', clock_timestamp()
              FROM unnest(@applications, @protocols, @addrs, @metas, @ttls) AS u(application, protocol, addr, meta, ttl)
            ON CONFLICT (application, protocol, addr) DO UPDATE
               SET meta = excluded.meta,
                   ttl_seconds = excluded.ttl_seconds,
                   expires_at = excluded.expires_at,
                   revision = CASE WHEN i.meta = excluded.meta AND i.ttl_seconds = excluded.ttl_seconds
                                   THEN i.revision ELSE excluded.revision END
            RETURNING i.application, i.protocol, i.addr, i.expires_at
            """);
        InstanceKeys.AddParameters(command.Parameters, keys);
        command.Parameters.Add(new NpgsqlParameter<string[]>("metas", keys.Select(k => MetaJson.Serialize(rows[k].Meta)).ToArray()));
        command.Parameters.Add(new NpgsqlParameter<int[]>("ttls", keys.Select(k => rows[k].TtlSeconds).ToArray()));
        return command;
    }

    private static NpgsqlBatchCommand Delete(InstanceKey[] keys)
    {
        var command = new NpgsqlBatchCommand(
            """
            DELETE FROM instances i
             USING unnest(@applications, @protocols, @addrs) AS k(application, protocol, addr)
             WHERE i.application = k.application AND i.protocol = k.protocol AND i.addr = k.addr
            """);
        InstanceKeys.AddParameters(command.Parameters, keys);
        return command;
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "A committed batch could not be loaded into memory; answering it anyway (the consistency check catches up)")]
    private static partial void LogReflectFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "A batch of {Count} writes failed; answered 503")]
    private static partial void LogWriteFailed(ILogger logger, int count, Exception exception);
}
