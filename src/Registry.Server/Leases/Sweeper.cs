using System.Data.Common;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Membership;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Leases;

/// <summary>
/// Evicts expired leases. Every node runs it; a transaction-scoped advisory lock lets one
/// sweep at a time, but correctness does not depend on it: the delete re-checks expiry
/// under <c>FOR UPDATE SKIP LOCKED</c> at the time the sweep counted, in bounded batches, and
/// announces each affected application once in the same transaction. No sweep runs while the
/// cluster owes a grace (<see cref="LeaseGrace"/>): the first node to write its renewals settles
/// it. Each counts its evictions where every node's sweeps see them (self-preservation's budget).
/// </summary>
internal sealed partial class Sweeper(
    RegistryDatabase database,
    LeaseGrace grace,
    SelfPreservation selfPreservation,
    SweepSchedule schedule,
    DatabaseClock clock,
    AuditLog audit,
    RegistryMetrics metrics,
    IOptions<LeaseOptions> options,
    IOptions<MembershipOptions> membership,
    TimeProvider time,
    ILogger<Sweeper> logger) : BackgroundService
{
    /// <summary>
    /// How long past its expiry a lease is left before it is evicted: a heartbeat answered just
    /// before the expiry waits up to a renewal interval for its write, and must not lose its
    /// instance to a sweep in between. Two intervals, so a slow flush is covered too. Nodes
    /// that may still hold a promised renewal hold the eviction back too (see
    /// <see cref="Evictable"/>); a healthy cluster marks every liveness interval.
    /// </summary>
    private TimeSpan Settle => 2 * options.Value.RenewalInterval;

    /// <summary>The advisory lock key: "registry" in ASCII.</summary>
    private const long LockKey = 0x7265676973747279;

    private bool _failing;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.SweepInterval, time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await SweepAsync(stoppingToken);
                if (_failing)
                {
                    _failing = false;
                    LogRecovered(logger);
                }
            }
            catch (DbException e)
            {
                metrics.DatabaseError("sweep");
                if (!_failing)
                {
                    _failing = true;
                    LogFailing(logger, e);
                }
            }
        }
    }

    /// <summary>One sweep; returns how many instances it evicted.</summary>
    internal async Task<int> SweepAsync(CancellationToken cancellationToken)
    {
        if (!schedule.Due(clock.UtcNow))
        {
            // Nothing this node knows of can have expired: not even a statement.
            metrics.Swept("idle");
            return 0;
        }

        await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await using (var tryLock = new NpgsqlCommand("SELECT pg_try_advisory_xact_lock(@key)", connection, transaction))
        {
            tryLock.Parameters.AddWithValue("key", LockKey);
            if (!(bool)(await tryLock.ExecuteScalarAsync(cancellationToken))!)
            {
                metrics.Swept("locked_out");
                return 0;
            }
        }

        var (owed, databaseNow) = await grace.OwedAsync(connection, transaction, cancellationToken);
        clock.Observe(databaseNow);
        if (owed)
        {
            // The first node to write its renewals extends the leases and marks (LeaseRenewer); swept before, a lease
            // a node promised and has not written could go. Nobody marking for the grace gap: nobody can record, and
            // nothing is evicted meanwhile.
            metrics.Swept("grace_owed");
            return 0;
        }

        schedule.SweepStarting();
        int live, expired, recentlyEvicted;
        DateTimeOffset? nextExpiry;
        DateTime now;
        await using (var count = new NpgsqlCommand(
            $"""
            WITH c AS (SELECT clock_timestamp() AS now)
            SELECT count(i.expires_at)::int,
                   (count(*) FILTER (WHERE {Evictable("c.now")}))::int,
                   min(i.expires_at) FILTER (WHERE NOT ({Evictable("c.now")})) + @settle,
                   (SELECT coalesce(sum(instances), 0) FROM evictions WHERE evicted_at > c.now - @window)::int,
                   c.now
              FROM c LEFT JOIN instances i ON true
             GROUP BY c.now
            """, connection, transaction))
        {
            count.Parameters.AddWithValue("window", options.Value.SelfPreservationWindow);
            AddEvictableParameters(count.Parameters);
            await using var reader = await count.ExecuteReaderAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            live = reader.GetInt32(0);
            expired = reader.GetInt32(1);
            nextExpiry = reader.IsDBNull(2) ? null : new DateTimeOffset(reader.GetDateTime(2), TimeSpan.Zero);
            recentlyEvicted = reader.GetInt32(3);
            now = reader.GetDateTime(4);
        }

        if (expired == 0)
        {
            // Still forget old nodes, or a cluster that never evicts keeps every node it ever ran.
            // Only nodes: the evictions' rows are another table's locks to wait for (a reset deleting both tables
            // would deadlock).
            await ForgetNodesAsync(connection, transaction, cancellationToken);
            await transaction.CommitAsync(cancellationToken);
            selfPreservation.Budget(live, 0, recentlyEvicted);
            schedule.SweepFinished(nextExpiry);
            metrics.Swept("swept");
            return 0;
        }

        // Never more than were counted: leases that run out between the count and the delete
        // (a deploy's batch expires within milliseconds) wait for the next sweep, so the
        // self-preservation decision covers every eviction.
        var budget = Math.Min(expired, selfPreservation.Budget(live, expired, recentlyEvicted));
        var evicted = 0;
        var byApplication = new Dictionary<string, int>(StringComparer.Ordinal);
        while (budget - evicted > 0)
        {
            var batch = await EvictBatchAsync(connection, transaction, now, Math.Min(options.Value.SweepBatchSize, budget - evicted), byApplication, cancellationToken);
            evicted += batch;
            if (batch < options.Value.SweepBatchSize)
            {
                break;
            }
        }

        await RecordAsync(connection, transaction, evicted, cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        foreach (var (application, instances) in byApplication)
        {
            audit.Evicted(application, instances);
        }
        if (evicted >= expired)
        {
            schedule.SweepFinished(nextExpiry);
            // Nothing expired is left: release self-preservation now, not at the next due sweep.
            selfPreservation.Budget(live - evicted, 0, recentlyEvicted + evicted);
        }

        metrics.Evicted(evicted);
        metrics.Swept("swept");
        if (evicted > 0)
        {
            LogSwept(logger, evicted, expired);
        }

        return evicted;
    }

    /// <summary>
    /// Counts the sweep's evictions for every node's budget, and forgets what no budget needs
    /// any more: evictions older than the window, and nodes not seen for
    /// <see cref="KeepNodesFor"/> (a node's row is then only evidence of when
    /// the cluster last recorded, and this sweep just settled that).
    /// </summary>
    private async Task RecordAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, int evicted, CancellationToken cancellationToken)
    {
        await using var record = new NpgsqlCommand(
            """
            INSERT INTO evictions (evicted_at, instances) SELECT clock_timestamp(), @evicted WHERE @evicted > 0;
            DELETE FROM evictions WHERE evicted_at < clock_timestamp() - @window;
            """, connection, transaction);
        record.Parameters.AddWithValue("evicted", evicted);
        record.Parameters.AddWithValue("window", options.Value.SelfPreservationWindow);
        await record.ExecuteNonQueryAsync(cancellationToken);
        await ForgetNodesAsync(connection, transaction, cancellationToken);
    }

    private async Task ForgetNodesAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken)
    {
        await using var forget = new NpgsqlCommand("DELETE FROM nodes WHERE last_seen_at < clock_timestamp() - @forget", connection, transaction);
        forget.Parameters.AddWithValue("forget", KeepNodesFor);
        await forget.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>
    /// How long a node's row stays after the node was last seen: <see cref="MembershipOptions.ForgetAfter"/>,
    /// but never less than the longest <see cref="Evictable"/> may hold a lease back for it (the grace gap, or
    /// for a heartbeat lease of <see cref="LeaseOptions.MaxTtlSeconds"/> a node may have promised to renew):
    /// with the row, the hold would go.
    /// </summary>
    private TimeSpan KeepNodesFor
    {
        get
        {
            var lease = options.Value;
            var ttl = TimeSpan.FromSeconds(lease.MaxTtlSeconds);
            var hold = TimeSpan.FromTicks(Math.Max((long)(ttl.Ticks * lease.UnrecordedShare), RenewalRule.UnrecordedFloor(lease).Ticks))
                + ttl + RenewalRule.PromisingAfterMark(lease) + Settle;
            return new[] { hold, lease.GraceGap, membership.Value.ForgetAfter }.Max();
        }
    }

    /// <summary>
    /// Whether the lease of <c>i</c> may be evicted at <paramref name="now"/>: it ran out a settle
    /// margin ago, and no node may still hold a renewal of it that it promised and has not
    /// written. A node marks after writing what it gathered, vouching (<c>vouched_at</c>) for what it
    /// had gathered when that write began, so a lease that ran out before that holds nothing of that
    /// node's back (<c>last_seen_at</c> for a node of an earlier version). A node not seen since, or gone
    /// without a last mark (killed, cut off from the database), may have promised renewals
    /// until it knew it could not write them (<see cref="RenewalRule.CanRecord"/>), each for a
    /// TTL: the lease waits for that, or for the node's next mark. A node that left after its
    /// last writes and marked once more is out of it. Only heartbeats promise a provider an
    /// expiry: a session's or a probed instance's lease, kept by the registry itself, waits only
    /// for the nodes seen within the grace gap (a renewal gathered across a short outage).
    /// </summary>
    private static string Evictable(string now) =>
        $"""
        i.expires_at < {now} - @settle
        AND NOT EXISTS (
            SELECT 1 FROM nodes n
             WHERE coalesce(n.vouched_at, n.last_seen_at) <= i.expires_at
               AND n.last_seen_at > {now} - CASE WHEN i.session_held OR i.probe_kind IS NOT NULL THEN @recent
                   ELSE greatest(@recent, make_interval(secs => greatest(i.ttl_seconds * @share, @floor) + i.ttl_seconds) + @after) END
               AND (n.left_at IS NULL OR n.left_at > coalesce(n.vouched_at, n.last_seen_at)))
        """;

    private void AddEvictableParameters(NpgsqlParameterCollection parameters)
    {
        parameters.AddWithValue("settle", Settle);
        parameters.AddWithValue("recent", options.Value.GraceGap);
        parameters.AddWithValue("share", options.Value.UnrecordedShare);
        parameters.AddWithValue("floor", RenewalRule.UnrecordedFloor(options.Value).TotalSeconds);
        parameters.AddWithValue("after", RenewalRule.PromisingAfterMark(options.Value) + Settle);
    }

    private async Task<int> EvictBatchAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, DateTime now, int limit, Dictionary<string, int> byApplication, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(
            $"""
            WITH victims AS (
                SELECT i.application, i.protocol, i.addr FROM instances i
                 WHERE {Evictable("@now")}
                 ORDER BY i.expires_at
                 LIMIT @limit
                   FOR UPDATE OF i SKIP LOCKED),
            gone AS (
                DELETE FROM instances i USING victims v
                 WHERE i.application = v.application AND i.protocol = v.protocol AND i.addr = v.addr
                   AND {Evictable("@now")}
                RETURNING i.application, i.protocol, i.addr),
            counted AS (
                SELECT application, count(*)::int AS n, {Announcement.KeysSql} AS keys FROM gone GROUP BY application)
            -- The payload names the evicted instances when they fit (see Announcement).
            SELECT n, application, {Announcement.NotifySql("application", "keys", tag: null)} FROM counted
            """, connection, transaction);
        command.Parameters.AddWithValue("limit", limit);
        command.Parameters.Add(new NpgsqlParameter<DateTime>("now", now));
        AddEvictableParameters(command.Parameters);
        var evicted = 0;
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            evicted += reader.GetInt32(0);
            byApplication[reader.GetString(1)] = byApplication.GetValueOrDefault(reader.GetString(1)) + reader.GetInt32(0);
        }

        return evicted;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Swept {Evicted} expired instances ({Expired} were expired)")]
    private static partial void LogSwept(ILogger logger, int evicted, int expired);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Sweeper cannot reach the database; leases get a grace period once it is back")]
    private static partial void LogFailing(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Sweeper reaches the database again")]
    private static partial void LogRecovered(ILogger logger);
}
