using System.Collections.Concurrent;
using System.Data.Common;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Model;
using Registry.State;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Leases;

/// <summary>
/// Coalesces heartbeats. A heartbeat is answered from memory; the renewal is written only
/// when less than half of the lease is left, and the renewals gathered during one
/// <see cref="LeaseOptions.RenewalInterval"/> go to the database as one statement, which
/// notifies nobody (only renewals that find no row are announced, see <see cref="AnnounceLostAsync"/>). The database write rate is bounded by the interval, not by providers.
/// A heartbeat is answered <c>200</c> only while the node can record it: once a renewal has
/// waited unrecorded for <see cref="LeaseOptions.UnrecordedShare"/> of the lease, the node
/// refuses heartbeats, so the provider fails over to a node that can before its lease runs
/// out in the database. The same loop marks the node alive for the grace rule.
/// </summary>
internal sealed partial class LeaseRenewer(
    RegistryDatabase database,
    RegistryState state,
    DatabaseClock clock,
    LeaseGrace grace,
    RegistryMetrics metrics,
    IOptions<LeaseOptions> options,
    TimeProvider time,
    ILogger<LeaseRenewer> logger) : BackgroundService
{
    private const int MaxAttempts = 3;

    private readonly ConcurrentDictionary<InstanceKey, byte> _pending = new();

    /// <summary>
    /// The expiry this node last wrote or committed for an instance, with the row's revision
    /// then. It is a lower bound of the database's expiry only while the row keeps that
    /// revision: a registration elsewhere with another TTL changes the revision (and the
    /// change feed brings the row), and then the row as loaded is what counts. And only until
    /// memory is loaded whole again (<see cref="RegistryState.FullLoads"/>): the feed reconnects
    /// after a failover too, and the database it reads then may not hold what this node wrote.
    /// </summary>
    private readonly ConcurrentDictionary<InstanceKey, (long Revision, DateTimeOffset ExpiresAt, long Loads)> _written = new();

    /// <summary>Heartbeats waiting for the flush that writes their key (see <see cref="MustWait"/>).</summary>
    private readonly ConcurrentDictionary<InstanceKey, TaskCompletionSource<HeartbeatRenewal>> _awaited = new();

    private readonly RenewalRule _rule = new(options, time);

    /// <summary>When (database time, UTC ticks) this node last marked itself alive; see <see cref="MustWait"/>.</summary>
    private long _markedAt;

    private bool _failing;

    /// <summary>
    /// Renews a known instance's lease: the expiry to report, or null when this node cannot
    /// record renewals now (answer 503, so the provider tries another node).
    /// </summary>
    public DateTimeOffset? Renew(Instance instance) => Renew(instance, wait: false, force: false, out _);

    /// <summary>
    /// Renews as <see cref="Renew(Instance)"/> does, but writes the renewal even while memory says the lease has long
    /// to run: for a prober that has just taken an instance over, whose lease another node may have ended (a probe's
    /// end changes nothing the change feed carries, so no node's memory hears of it).
    /// </summary>
    public DateTimeOffset? RenewWritten(Instance instance) => Renew(instance, wait: false, force: true, out _);

    /// <summary>
    /// Renews a heartbeat's lease as <see cref="Renew(Instance)"/> does, except that a lease that may be evicted before
    /// the next flush (see <see cref="MustWait"/>) is answered only once its renewal is written: its provider must then
    /// hear that it is gone (404, and register again), not an expiry that no row holds. Such a heartbeat waits at most
    /// <see cref="RenewalRule.UnrecordedFloor"/> (503 after that) and costs no statement of its own.
    /// </summary>
    public ValueTask<HeartbeatRenewal> RenewHeartbeatAsync(Instance instance, CancellationToken cancellationToken)
    {
        // Synchronous but for a lapsed lease: a heartbeat answered from memory allocates no task.
        if (Renew(instance, wait: true, force: false, out var written) is not { } expiresAt)
        {
            return ValueTask.FromResult(HeartbeatRenewal.Refused);
        }

        return written is null ? ValueTask.FromResult(HeartbeatRenewal.Renewed(expiresAt)) : WaitAsync(written, cancellationToken);
    }

    private async ValueTask<HeartbeatRenewal> WaitAsync(Task<HeartbeatRenewal> written, CancellationToken cancellationToken)
    {
        try
        {
            return await written.WaitAsync(RenewalRule.UnrecordedFloor(options.Value), time, cancellationToken);
        }
        catch (TimeoutException)
        {
            return HeartbeatRenewal.Refused;
        }
    }

    /// <summary>
    /// Whether a renewal of a lease known to end at <paramref name="known"/> may be overtaken by a sweep. The sweepers
    /// hold back a lease this node may have promised to renew while it ran out after the node's last mark, and a mark
    /// comes after the node writes what it gathered, with a settle margin of two flushes past the expiry besides. A
    /// lease that ran out before the last mark, or more than a flush ago (a flush under way may mark without this
    /// renewal), is held back by neither.
    /// </summary>
    private bool MustWait(DateTimeOffset known, DateTimeOffset now) =>
        known <= new DateTimeOffset(Volatile.Read(ref _markedAt), TimeSpan.Zero) || known <= now - options.Value.RenewalInterval;

    private DateTimeOffset? Renew(Instance instance, bool wait, bool force, out Task<HeartbeatRenewal>? written)
    {
        written = null;
        var ttl = TimeSpan.FromSeconds(instance.TtlSeconds);
        var known = _written.TryGetValue(instance.Key, out var last) && last.Revision == instance.Revision && last.Loads == state.FullLoads && last.ExpiresAt > instance.ExpiresAt
            ? last.ExpiresAt
            : instance.ExpiresAt;
        var now = clock.UtcNow;
        // What is reported when the write is skipped is what the database holds.
        if (!force && !_rule.WriteDue(known, now, ttl))
        {
            return known;
        }

        if (!_rule.CanRecord(ttl))
        {
            return null;
        }

        if (wait && MustWait(known, now))
        {
            // Before the key is gathered: the flush that writes it finds the waiter.
            written = _awaited.GetOrAdd(instance.Key, static _ => new(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }

        _pending.TryAdd(instance.Key, 0);
        _rule.Gathered();
        return now + ttl;
    }

    /// <summary>Records an expiry committed by a registration.</summary>
    public void Committed(InstanceKey key, long revision, DateTimeOffset expiresAt) => _written[key] = (revision, expiresAt, state.FullLoads);

    /// <summary>Marks the node alive before it takes requests, settling any grace the cluster owes.</summary>
    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        await FlushAsync(mark: true, cancellationToken);
        await base.StartAsync(cancellationToken);
    }

    /// <summary>
    /// Writes what is still gathered once the loop has stopped: the server stops taking requests
    /// first, so these are the last renewals this node promised. Dropped, they would leave the
    /// database with the earlier expiries, and another node's sweeper would evict those
    /// instances before the expiry their providers were told (a rolling deploy would do it).
    /// The mark after them, later than the node's leaving (<see cref="Membership.LiveNodes"/>
    /// stops first), tells the sweepers that it holds no promise back (see Sweeper).
    /// </summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        try
        {
            await FlushAsync(mark: true, cancellationToken);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
            // The host gave up waiting, or is disposing the data source as it stops.
            LogStopUnwritten(logger, _pending.Count, e);
        }
        finally
        {
            Answer(_awaited.Keys, _ => HeartbeatRenewal.Refused);
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.RenewalInterval, time);
        var flushes = 0L;
        var nextMark = time.GetTimestamp() + (long)(options.Value.LivenessInterval.TotalSeconds * time.TimestampFrequency);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            var mark = time.GetTimestamp() >= nextMark;
            if (mark)
            {
                nextMark = time.GetTimestamp() + (long)(options.Value.LivenessInterval.TotalSeconds * time.TimestampFrequency);
            }

            await FlushAsync(mark, stoppingToken);
            if (++flushes % 240 == 0)
            {
                Prune();
            }
        }
    }

    /// <summary>Writes every gathered renewal in one statement; marks the node alive when <paramref name="mark"/>.</summary>
    private async Task FlushAsync(bool mark, CancellationToken cancellationToken)
    {
        if (_pending.IsEmpty && !mark)
        {
            return;
        }

        // Whatever is gathered from here on waits for the next flush.
        var started = _rule.FlushStarting();
        var keys = _pending.Keys.ToArray();
        foreach (var key in keys)
        {
            _pending.TryRemove(key, out _);
        }

        InstanceKey[] lost = [];
        try
        {
            await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
            if (keys.Length > 0)
            {
                var renewed = await WriteWithRetryAsync(connection, keys, cancellationToken);
                Answer(keys, key => renewed.TryGetValue(key, out var expiresAt)
                    ? HeartbeatRenewal.Renewed(expiresAt)
                    : HeartbeatRenewal.Gone);
                lost = [.. keys.Where(key => !renewed.ContainsKey(key) && state.Find(key) is not null)];
            }

            // After the renewals: a mark then says that every renewal this node gathered before
            // the flush began is in the database, which is what the sweeper waits for (Sweeper):
            // vouched for as of the flush's start, since one gathered while it ran is not.
            if (mark)
            {
                var behind = time.GetElapsedTime(started);
                var now = await grace.SettleAsync(connection, behind, cancellationToken);
                clock.Observe(now);
                Volatile.Write(ref _markedAt, (now - behind).UtcTicks);
            }

            // Recorded: what waits now was gathered after this flush began.
            _rule.Recorded(started, more: !_pending.IsEmpty);
            if (_failing)
            {
                _failing = false;
                LogRecovered(logger);
            }

            if (lost.Length > 0)
            {
                await AnnounceLostAsync(connection, lost, cancellationToken);
            }
        }
        catch (Exception e) when (e is DbException or OperationCanceledException)
        {
            // Keep them for the next interval, or the write at stop; renewals are idempotent.
            foreach (var key in keys)
            {
                _pending.TryAdd(key, 0);
            }

            // A waiting heartbeat is answered 503 like one that comes while the node cannot write.
            Answer(keys, _ => HeartbeatRenewal.Refused);
            if (e is OperationCanceledException)
            {
                throw;
            }

            _rule.Failed();
            metrics.DatabaseError("renewal");
            if (!_failing)
            {
                _failing = true;
                LogFailing(logger, keys.Length, e);
            }
        }
    }

    /// <summary>Answers the heartbeats waiting for <paramref name="keys"/>' write.</summary>
    private void Answer(IEnumerable<InstanceKey> keys, Func<InstanceKey, HeartbeatRenewal> outcome)
    {
        if (_awaited.IsEmpty)
        {
            return;
        }

        foreach (var key in keys)
        {
            if (_awaited.TryRemove(key, out var waiting))
            {
                waiting.TrySetResult(outcome(key));
            }
        }
    }

    /// <summary>
    /// A renewal batch chosen as a deadlock victim wrote nothing (its statement is its whole
    /// transaction): it is written again at once, not left for the next interval as if the
    /// database were unreachable.
    /// </summary>
    private async Task<Dictionary<InstanceKey, DateTimeOffset>> WriteWithRetryAsync(NpgsqlConnection connection, InstanceKey[] keys, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await WriteAsync(connection, keys, cancellationToken);
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure && attempt < MaxAttempts)
            {
                // Only a grace extension or a batch's removals still lock rows in another order.
            }
        }
    }

    /// <summary>Writes the renewals; returns the rows renewed, with their new expiries (a key with no row is not among them).</summary>
    private async Task<Dictionary<InstanceKey, DateTimeOffset>> WriteAsync(NpgsqlConnection connection, InstanceKey[] keys, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(
            """
            WITH due AS (
                -- Rows locked in the order a registration batch locks them (WriteBatcher's
                -- ORDER BY over the same unnest), so that renewals and registrations, on any
                -- node, never wait for each other in a cycle.
                SELECT i.application, i.protocol, i.addr
                  FROM instances i
                  JOIN unnest(@applications, @protocols, @addrs) AS k(application, protocol, addr)
                    ON i.application = k.application AND i.protocol = k.protocol AND i.addr = k.addr
                 ORDER BY k.application, k.protocol, k.addr
                   FOR NO KEY UPDATE OF i)
            UPDATE instances i
               SET expires_at = clock_timestamp() + i.ttl_seconds * interval '1 second'
              FROM due d
             WHERE i.application = d.application AND i.protocol = d.protocol AND i.addr = d.addr
            RETURNING i.application, i.protocol, i.addr, i.expires_at, clock_timestamp(), i.revision
            """, connection);
        InstanceKeys.AddParameters(command.Parameters, keys);
        var renewed = new Dictionary<InstanceKey, DateTimeOffset>(keys.Length);
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                var key = new InstanceKey(reader.GetString(0), reader.GetString(1), reader.GetString(2));
                var expiresAt = new DateTimeOffset(reader.GetDateTime(3), TimeSpan.Zero);
                _written[key] = (reader.GetInt64(5), expiresAt, state.FullLoads);
                clock.Observe(new DateTimeOffset(reader.GetDateTime(4), TimeSpan.Zero));
                renewed[key] = expiresAt;
            }
        }

        metrics.HeartbeatsWritten(renewed.Count);
        return renewed;
    }

    /// <summary>
    /// Announces instances that memory holds and the database does not (their renewal found no row), as a change to
    /// them: every node reads them again. Their removal's notification was lost, or is still on its way; without this,
    /// memory would go on listing them, and answering their heartbeats 200 with an expiry no row holds (their providers
    /// never registering again), until the consistency check.
    /// </summary>
    /// <remarks>After the renewals are recorded and the node marked: a failure here costs the announcement alone (logged; the consistency check still finds them).</remarks>
    private async Task AnnounceLostAsync(NpgsqlConnection connection, InstanceKey[] lost, CancellationToken cancellationToken)
    {
        var payloads = lost.GroupBy(key => key.Application, StringComparer.Ordinal).Select(keys => Announcement.Payload(keys.Key, keys)).ToArray();
        try
        {
            await using var command = new NpgsqlCommand($"SELECT count(pg_notify('{Schema.ChangeChannel}', p)) FROM unnest(@payloads) AS p", connection);
            command.Parameters.Add(new NpgsqlParameter<string[]>("payloads", payloads));
            await command.ExecuteScalarAsync(cancellationToken);
        }
        catch (DbException e)
        {
            metrics.DatabaseError("renewal_announcement");
            LogAnnounceFailed(logger, lost.Length, e);
        }
    }

    /// <summary>
    /// Forgets the expiries that say nothing any more: run out, or of an instance memory no longer holds (unregistered,
    /// evicted; a heartbeat finds none to renew). Before, only expiry did: a client registering with a day's TTL and
    /// unregistering on fresh addresses left an entry for a day per pair of writes.
    /// </summary>
    internal void Prune()
    {
        var horizon = clock.UtcNow;
        foreach (var (key, expires) in _written)
        {
            if (expires.ExpiresAt < horizon || state.Find(key) is null)
            {
                _written.TryRemove(key, out _);
            }
        }
    }

    /// <summary>How many expiries this node remembers having written (what <see cref="Prune"/> bounds).</summary>
    internal int Remembered => _written.Count;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot record {Count} lease renewals: the database is unreachable; retrying every interval; heartbeats are refused once a renewal has waited too long")]
    private static partial void LogFailing(ILogger logger, int count, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Stopped with {Count} lease renewals unwritten; those providers' leases may end before the expiry they were told")]
    private static partial void LogStopUnwritten(ILogger logger, int count, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not announce {Count} instances whose renewal found no row; the consistency check will find them")]
    private static partial void LogAnnounceFailed(ILogger logger, int count, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Recording lease renewals again")]
    private static partial void LogRecovered(ILogger logger);
}

/// <summary>How a heartbeat's renewal went.</summary>
internal enum RenewalOutcome
{
    /// <summary>Renewed, or to be written with the next flush: answer 200 with the expiry.</summary>
    Renewed,

    /// <summary>This node cannot record renewals now: answer 503.</summary>
    Refused,

    /// <summary>No row held the lease when its renewal was written (evicted or unregistered meanwhile): answer 404.</summary>
    Gone,
}

/// <summary>A heartbeat's renewal: its outcome and, when renewed, the expiry to report.</summary>
internal readonly record struct HeartbeatRenewal(RenewalOutcome Outcome, DateTimeOffset ExpiresAt)
{
    public static readonly HeartbeatRenewal Refused = new(RenewalOutcome.Refused, default);

    public static readonly HeartbeatRenewal Gone = new(RenewalOutcome.Gone, default);

    public static HeartbeatRenewal Renewed(DateTimeOffset expiresAt) => new(RenewalOutcome.Renewed, expiresAt);
}
