using System.Data.Common;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Leases;
using Registry.Membership;
using Registry.Model;
using Registry.State;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Probes;

/// <summary>
/// Probes the instances this node owns. Every <see cref="ProbeOptions.RefreshInterval"/> it
/// reads which instances are probed (a partial index holds only those) and, whenever that or
/// the live membership changes, keeps those whose rendezvous owner among the live nodes is
/// this node; so when a node stops or dies its instances move to the others as soon as they
/// see it gone. Passing probes renew the lease through the same coalesced path as heartbeats.
/// After <see cref="ProbeOptions.FailuresToEvict"/> failures in a row the lease is ended now
/// and the sweeper evicts the instance like any expired one: within self-preservation's
/// budget, counted, audited, and with its subscribers woken.
/// </summary>
internal sealed partial class ProbeScheduler(
    RegistryDatabase database,
    LiveNodes live,
    NodeIdentity node,
    Prober prober,
    RegistryState state,
    LeaseRenewer renewer,
    SweepSchedule schedule,
    AuditLog audit,
    RegistryMetrics metrics,
    IOptions<ProbeOptions> options,
    TimeProvider time,
    ILogger<ProbeScheduler> logger) : BackgroundService
{
    /// <summary>How finely probes are started on time; lateness below it is not worth a timer each.</summary>
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(50);

    private readonly SemaphoreSlim _slots = new(options.Value.MaxConcurrent, options.Value.MaxConcurrent);
    private Dictionary<InstanceKey, Target> _owned = [];
    private List<(InstanceKey Key, ProbeSpec Spec)> _probed = [];
    private IReadOnlyList<NodeInfo>? _membership;
    private bool _failing;

    private sealed class Target(InstanceKey key, ProbeSpec spec, long due)
    {
        public InstanceKey Key { get; } = key;

        public ProbeSpec Spec { get; } = spec;

        /// <summary>When the next probe is due (timestamp ticks); only the scheduling loop touches it.</summary>
        public long Due { get; set; } = due;

        /// <summary>A probe of it is running; set by the loop, cleared by the probe.</summary>
        public volatile bool Running;

        /// <summary>Consecutive failures; only the running probe touches it.</summary>
        public int Failures { get; set; }

        /// <summary>This node ended its lease after failures (the sweeper evicts it unless self-preservation holds it back).</summary>
        public bool Ended { get; set; }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.Value.AllowedNetworks.Length == 0)
        {
            return; // probing is off: no registration can ask for it
        }

        using var timer = new PeriodicTimer(Tick, time);
        var refresh = TimeSpan.FromSeconds(0);
        var lastRead = time.GetTimestamp();
        do
        {
            if (time.GetElapsedTime(lastRead) >= refresh)
            {
                lastRead = time.GetTimestamp();
                refresh = options.Value.RefreshInterval;
                await ReadProbedAsync(stoppingToken);
                _membership = null; // recompute ownership below
            }

            if (live.Current is var current && !ReferenceEquals(_membership, current))
            {
                _membership = current;
                Reconcile([.. current.Select(n => n.Id)]);
            }

            StartDue(stoppingToken);
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    private async Task ReadProbedAsync(CancellationToken cancellationToken)
    {
        try
        {
            await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
            await using var command = new NpgsqlCommand(
                "SELECT application, protocol, addr, probe_kind, probe_path, probe_interval_seconds FROM instances WHERE probe_kind IS NOT NULL",
                connection);
            var probed = new List<(InstanceKey, ProbeSpec)>(_probed.Count);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken);
            while (await reader.ReadAsync(cancellationToken))
            {
                probed.Add((
                    new InstanceKey(reader.GetString(0), reader.GetString(1), reader.GetString(2)),
                    new ProbeSpec(reader.GetString(3), reader.IsDBNull(4) ? null : reader.GetString(4), reader.GetInt32(5))));
            }

            _probed = probed;
            _failing = false;
        }
        catch (DbException e)
        {
            // Keep probing what this node owns; the leases are written once the database is back.
            metrics.DatabaseError("probes");
            if (!_failing)
            {
                _failing = true;
                LogReadFailed(logger, e);
            }
        }
    }

    /// <summary>Keeps the targets this node owns among <paramref name="nodes"/>; a target whose probe changed starts afresh.</summary>
    private void Reconcile(string[] nodes)
    {
        var owned = new Dictionary<InstanceKey, Target>();
        var now = time.GetTimestamp();
        foreach (var (key, spec) in _probed)
        {
            var item = $"{key.Application}\n{key.Protocol}\n{key.Addr}";
            if (Rendezvous.Owner(item, nodes) != node.Id)
            {
                continue;
            }

            if (_owned.TryGetValue(key, out var kept) && kept.Spec == spec)
            {
                owned[key] = kept;
                continue;
            }

            // The first probe at a point within the interval fixed by the key, so that many
            // instances taken over at once (a node died) are spread over the interval.
            var interval = Seconds(spec.IntervalSeconds);
            owned[key] = new Target(key, spec, now + (long)(Rendezvous.Hash(item) % (ulong)Math.Max(1, interval)));
        }

        _owned = owned;
        metrics.ProbesOwned(owned.Count);
    }

    private void StartDue(CancellationToken stoppingToken)
    {
        var now = time.GetTimestamp();
        foreach (var target in _owned.Values)
        {
            if (target.Running || now < target.Due)
            {
                continue;
            }

            if (!_slots.Wait(0, CancellationToken.None))
            {
                return; // at the cap: the rest start late, and the lateness shows
            }

            metrics.ProbeLate(time.GetElapsedTime(target.Due, now));
            var interval = Seconds(target.Spec.IntervalSeconds);
            // Keep the cadence; after a long stall start again from now rather than in a burst.
            target.Due = target.Due + interval > now ? target.Due + interval : now + interval;
            target.Running = true;
            _ = RunAsync(target, stoppingToken);
        }
    }

    private async Task RunAsync(Target target, CancellationToken stoppingToken)
    {
        try
        {
            var started = time.GetTimestamp();
            var timeout = TimeSpan.FromSeconds(Math.Min(target.Spec.IntervalSeconds, options.Value.TimeoutSeconds));
            var passed = await prober.ProbeAsync(target.Key.Addr, target.Spec, timeout, stoppingToken);
            metrics.Probed(target.Spec.Kind, passed, time.GetElapsedTime(started));
            if (passed)
            {
                target.Failures = 0;
                if (target.Ended)
                {
                    target.Ended = !await ReviveAsync(target.Key, stoppingToken);
                }
                else if (state.Find(target.Key) is { } instance)
                {
                    // Null when this node cannot record renewals now; the next pass tries again.
                    renewer.Renew(instance);
                }
            }
            else if (++target.Failures >= options.Value.FailuresToEvict && !target.Ended)
            {
                target.Ended = await EndLeaseAsync(target, stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping.
        }
        catch (DbException e)
        {
            metrics.DatabaseError("probes");
            LogWriteFailed(logger, target.Key.Application, target.Key.Addr, e);
        }
        finally
        {
            target.Running = false;
            _slots.Release();
        }
    }

    /// <summary>
    /// Ends the lease now rather than deleting the row: the sweeper then evicts it with every
    /// other expired lease, so probe evictions share self-preservation's budget, its count in
    /// <c>evictions</c>, its audit and its notifications. Only while the instance is still probed.
    /// </summary>
    private async Task<bool> EndLeaseAsync(Target target, CancellationToken cancellationToken)
    {
        await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            """
            UPDATE instances SET expires_at = clock_timestamp() - interval '1 millisecond'
             WHERE application = @application AND protocol = @protocol AND addr = @addr AND probe_kind IS NOT NULL
            RETURNING expires_at
            """, connection);
        AddKey(command, target.Key);
        if (await command.ExecuteScalarAsync(cancellationToken) is not DateTime ended)
        {
            return false; // unregistered or no longer probed meanwhile
        }

        schedule.Consider(new DateTimeOffset(ended, TimeSpan.Zero));
        metrics.ProbeEvicted();
        audit.ProbeFailed(target.Key, target.Failures, node.Id);
        return true;
    }

    /// <summary>
    /// A probe passed after this node ended the lease but before the sweeper could evict it
    /// (self-preservation held it back): the lease starts again.
    /// </summary>
    private async Task<bool> ReviveAsync(InstanceKey key, CancellationToken cancellationToken)
    {
        await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            """
            UPDATE instances SET expires_at = clock_timestamp() + ttl_seconds * interval '1 second'
             WHERE application = @application AND protocol = @protocol AND addr = @addr AND probe_kind IS NOT NULL
            """, connection);
        AddKey(command, key);
        return await command.ExecuteNonQueryAsync(cancellationToken) > 0;
    }

    private static void AddKey(NpgsqlCommand command, InstanceKey key)
    {
        command.Parameters.AddWithValue("application", key.Application);
        command.Parameters.AddWithValue("protocol", key.Protocol);
        command.Parameters.AddWithValue("addr", key.Addr);
    }

    private long Seconds(int seconds) => seconds * time.TimestampFrequency;

    public override void Dispose()
    {
        _slots.Dispose();
        base.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot read the probed instances; probing those already known")]
    private static partial void LogReadFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot record a probe's outcome for {Application} {Addr}; the next probe tries again")]
    private static partial void LogWriteFailed(ILogger logger, string application, string addr, Exception exception);
}
