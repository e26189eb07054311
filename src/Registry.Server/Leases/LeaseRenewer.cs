using System.Collections.Concurrent;
using System.Data.Common;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Model;
using Registry.Operations;
using Registry.Storage;
using Registry.Subscription;

namespace Registry.Leases;

/// <summary>
/// Coalesces heartbeats. A heartbeat is answered from memory; the renewal is written only
/// when less than half of the lease is left, and the renewals gathered during one
/// <see cref="LeaseOptions.RenewalInterval"/> go to the database as one statement, which
/// never notifies. The database write rate is bounded by the interval, not by providers.
/// </summary>
internal sealed partial class LeaseRenewer(
    RegistryDatabase database,
    DatabaseClock clock,
    LeaseGrace grace,
    RegistryMetrics metrics,
    IOptions<LeaseOptions> options,
    TimeProvider time,
    ILogger<LeaseRenewer> logger) : BackgroundService
{
    private readonly ConcurrentDictionary<InstanceKey, byte> _pending = new();

    /// <summary>The expiry this node last wrote or committed for an instance (a lower bound of the truth).</summary>
    private readonly ConcurrentDictionary<InstanceKey, DateTimeOffset> _written = new();

    private bool _failing;

    /// <summary>Renews a known instance's lease; returns the expiry to report.</summary>
    public DateTimeOffset Renew(Instance instance)
    {
        var ttl = TimeSpan.FromSeconds(instance.TtlSeconds);
        var known = _written.TryGetValue(instance.Key, out var written) && written > instance.ExpiresAt ? written : instance.ExpiresAt;
        var now = clock.UtcNow;
        // Skip the write while most of the lease is still ahead; keep a margin of two
        // intervals so a short lease is written before it can run out.
        if (known - now > ttl / 2 + 2 * options.Value.RenewalInterval)
        {
            return known;
        }

        _pending.TryAdd(instance.Key, 0);
        return now + ttl;
    }

    /// <summary>Records an expiry committed by a registration.</summary>
    public void Committed(InstanceKey key, DateTimeOffset expiresAt) => _written[key] = expiresAt;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.RenewalInterval, time);
        var flushes = 0L;
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            await FlushAsync(stoppingToken);
            if (++flushes % 240 == 0)
            {
                Prune();
            }
        }
    }

    /// <summary>Writes every gathered renewal in one statement.</summary>
    private async Task FlushAsync(CancellationToken cancellationToken)
    {
        if (_pending.IsEmpty)
        {
            return;
        }

        var keys = _pending.Keys.ToArray();
        foreach (var key in keys)
        {
            _pending.TryRemove(key, out _);
        }

        try
        {
            await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
            if (_failing)
            {
                // Heartbeats went unrecorded while the database was away: grace first.
                await grace.ExtendAsync(connection, cancellationToken);
            }

            await using var command = new NpgsqlCommand(
                """
                UPDATE instances i
                   SET expires_at = clock_timestamp() + i.ttl_seconds * interval '1 second'
                  FROM unnest(@applications, @protocols, @addrs) AS k(application, protocol, addr)
                 WHERE i.application = k.application AND i.protocol = k.protocol AND i.addr = k.addr
                RETURNING i.application, i.protocol, i.addr, i.expires_at, clock_timestamp()
                """, connection);
            InstanceKeys.AddParameters(command.Parameters, keys);
            var renewed = 0;
            await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
            {
                while (await reader.ReadAsync(cancellationToken))
                {
                    var key = new InstanceKey(reader.GetString(0), reader.GetString(1), reader.GetString(2));
                    _written[key] = new DateTimeOffset(reader.GetDateTime(3), TimeSpan.Zero);
                    clock.Observe(new DateTimeOffset(reader.GetDateTime(4), TimeSpan.Zero));
                    renewed++;
                }
            }

            metrics.HeartbeatsWritten(renewed);
            if (_failing)
            {
                _failing = false;
                LogRecovered(logger);
            }
        }
        catch (DbException e)
        {
            // Keep them for the next interval; renewals are idempotent.
            foreach (var key in keys)
            {
                _pending.TryAdd(key, 0);
            }

            metrics.DatabaseError("renewal");
            grace.Require();
            if (!_failing)
            {
                _failing = true;
                LogFailing(logger, keys.Length, e);
            }
        }
    }

    private void Prune()
    {
        var horizon = clock.UtcNow;
        foreach (var (key, expires) in _written)
        {
            if (expires < horizon)
            {
                _written.TryRemove(key, out _);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot record {Count} lease renewals: the database is unreachable; retrying every interval, and leases get a grace period once it is back")]
    private static partial void LogFailing(ILogger logger, int count, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Recording lease renewals again")]
    private static partial void LogRecovered(ILogger logger);
}
