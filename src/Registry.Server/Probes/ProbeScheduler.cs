using System.Data;
using System.Data.Common;
using System.Net;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Access;
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
/// the live membership changes, keeps those whose rendezvous owner among the live nodes that
/// probe them (<see cref="Reconcile"/>) is this node; so when a node dies its instances move to
/// the others once two of their reads have missed it (<see cref="ConsiderMembership"/>), and when
/// it stops, at their read of its leaving (which it announces, <see cref="LiveNodes"/>),
/// and a node that finds itself cut off from them leaves them to the others (<see cref="JudgeSelf"/>).
/// Passing probes renew the lease through the same coalesced path as heartbeats.
/// After <see cref="ProbeOptions.FailuresToEvict"/> failures in a row the lease is ended now
/// and the sweeper evicts the instance like any expired one: within self-preservation's
/// budget, counted, audited, and with its subscribers woken.
/// </summary>
internal sealed partial class ProbeScheduler(
    RegistryDatabase database,
    LiveNodes live,
    NodeIdentity node,
    NodeCapabilities capabilities,
    Prober prober,
    RegistryState state,
    DatabaseClock clock,
    LeaseRenewer renewer,
    SweepSchedule schedule,
    TokenCache tokens,
    AuditLog audit,
    RegistryMetrics metrics,
    IOptions<ProbeOptions> options,
    IOptions<MembershipOptions> membership,
    IOptions<LeaseOptions> leases,
    TimeProvider time,
    ILogger<ProbeScheduler> logger) : BackgroundService
{
    /// <summary>How finely probes are started on time; lateness below it is not worth a timer each.</summary>
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(50);

    /// <summary>How often this node judges its own probes (<see cref="JudgeSelf"/>).</summary>
    internal static readonly TimeSpan JudgementInterval = TimeSpan.FromMilliseconds(250);

    /// <summary>What the probed instances are (keys and probes), as one number; see <see cref="ReadProbedAsync"/>.</summary>
    private const string DigestStatement = """
        SELECT coalesce(bit_xor(hashtextextended(concat_ws(E'\n', application, protocol, addr, probe_kind, probe_path, probe_interval_seconds, probe_credential), 0)), 0)
          FROM instances WHERE probe_kind IS NOT NULL
        """;

    private readonly SemaphoreSlim _slots = new(options.Value.MaxConcurrent, options.Value.MaxConcurrent);
    /// <summary>
    /// The read of the probed instances under way, beside the loop rather than in it: one held at a lock (an operator's
    /// ALTER TABLE) or by a database that does not answer must not stop the probes this node owns, nor its membership
    /// and its judgement of itself. Only the loop touches it (and the stop, once the loop has ended).
    /// </summary>
    private Task<ProbedRead?>? _reading;

    /// <summary>The targets this node owns; a new dictionary for each reconcile, never changed once published.</summary>
    private volatile Dictionary<InstanceKey, Target> _owned = [];
    /// <summary>Membership reads failing for <see cref="MembershipOptions.NodeTimeout"/>: to the others this node is gone, so it owns nothing.</summary>
    private bool _cutOff;
    // The owned targets by when they are next due, so a tick visits only the due ones.
    private PriorityQueue<Target, long> _due = new();
    private List<(InstanceKey Key, ProbeSpec Spec)> _probed = [];
    private bool _ownershipStale;
    private MembershipRead? _membership;
    private Member[] _nodes = [];
    // Nodes of _nodes that the last read of the live nodes missed, with when a read first missed them (timestamp ticks).
    private readonly Dictionary<string, long> _missedSince = new(StringComparer.Ordinal);
    private long? _digest;
    private bool _failing;
    // Until when this node has withdrawn from probing (timestamp ticks), while capabilities.Probes says it has.
    private long _withdrawnUntil;
    // Since when (on the database's clock) this node's recent probes have passed less than SuspectSelfBelow.
    private DateTimeOffset? _lowSince;
    // Until when (timestamp ticks), after taking a share again, no lease is ended before this node has judged its probes.
    private long _rejoinHold;
    // How far back JudgeSelf looks for outcomes (timestamp ticks); see Reconcile.
    private long _judgedWindow;
    // The shortest interval of the shared instances (seconds; 0: none), and one of it and a timeout (timestamp ticks).
    private int _shortest;
    private long _shortWindow;
    // The other nodes that could probe some instance this node probes: those whose probes it compares with its own.
    private HashSet<string> _peers = [];
    // No lease is ended while set: this node has withdrawn, or its probes fail and it does not know yet whether the others' do.
    private volatile bool _holdEnds;
    // Completed by the loop after the next JudgeSelf (swapped for a new one before it judges); see HoldsEndsAsync.
    private TaskCompletionSource _judged = new(TaskCreationOptions.RunContinuationsAsynchronously);
    // A probe waits for a judgement: the loop judges at its next tick rather than at the next JudgementInterval.
    private volatile bool _judgementWanted;
    // Changes when this node withdraws or takes a share again: failures counted before do not count after.
    private volatile int _epoch;

    /// <summary>A live node as ownership counts it: its id, the networks it advertised it probes (null: none), and whether it has withdrawn.</summary>
    private sealed record Member(string Id, IReadOnlyList<string>? Advertised, bool Withdrawn)
    {
        public IPNetwork[]? Networks { get; } = Advertised is null ? null : ProbeNetworks.Parse(Advertised);

        public bool SameAs(Member other) =>
            Id == other.Id && Withdrawn == other.Withdrawn
            && (Advertised is null ? other.Advertised is null : other.Advertised is not null && Advertised.SequenceEqual(other.Advertised));

        /// <summary>Whether it takes a share of the instance at <paramref name="address"/> (null: a DNS name, checked only at each probe).</summary>
        public bool Probes(IPAddress? address) =>
            Networks is { Length: > 0 } networks && (address is null || ProbeNetworks.Admits(address, networks));
    }

    private sealed class Target(InstanceKey key, ProbeSpec spec, ProbeEndpoint endpoint, long due)
    {
        public InstanceKey Key { get; } = key;

        public ProbeSpec Spec { get; } = spec;

        public ProbeEndpoint Endpoint { get; } = endpoint;

        /// <summary>When the next probe is due (timestamp ticks); only the scheduling loop touches it.</summary>
        public long Due { get; set; } = due;

        /// <summary>A probe of it is running; set by the loop, cleared by the probe.</summary>
        public volatile bool Running;

        /// <summary>Whether the last probe passed; set by the probe before <see cref="OutcomeAt"/>, read by <see cref="JudgeSelf"/>.</summary>
        public volatile bool LastPassed;

        /// <summary>When the last probe ended (timestamp ticks; 0: none yet); written and read with <see cref="Volatile"/>.</summary>
        public long OutcomeAt;

        /// <summary>Another node that has not withdrawn could probe it as well (<see cref="JudgeSelf"/> counts only these); only the loop touches it.</summary>
        public bool Shared { get; set; }

        /// <summary>Consecutive failures; only the running probe touches it.</summary>
        public int Failures { get; set; }

        /// <summary>The <see cref="_epoch"/> its failures were counted in; only the running probe touches it.</summary>
        public int Epoch { get; set; }

        /// <summary>
        /// The revision of the registration the failures count against, as this node last saw
        /// it (every probed registration takes a fresh one); only the running probe touches it.
        /// </summary>
        public long? Revision { get; set; }

        /// <summary>This node ended its lease after failures (the sweeper evicts it unless self-preservation holds it back).</summary>
        public bool Ended { get; set; }

        /// <summary>A passing probe of this node has had the lease written since it took the instance over; only the running probe touches it.</summary>
        public bool Written { get; set; }

        /// <summary>The token that asked for the probe is gone: this node ended the lease and probes it no more; only the running probe touches it.</summary>
        public bool CredentialEnded { get; set; }
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
        var lastJudged = lastRead;
        do
        {
            if (_reading is null && time.GetElapsedTime(lastRead) >= refresh)
            {
                _reading = ReadProbedAsync(_digest, stoppingToken);
            }

            if (_reading is { IsCompleted: true })
            {
                if (await _reading is { } probed)
                {
                    _probed = probed.Probed;
                    _digest = probed.Digest;
                    _ownershipStale = true;
                }

                _reading = null;
                lastRead = time.GetTimestamp();
                refresh = options.Value.RefreshInterval;
            }

            // Ownership is recomputed only when what is probed or which nodes are live changed
            // (membership is read every second, as a new list even when nobody came or went): at
            // 10,000 probed instances that is 10,000 rendezvous hashes, not worth doing for nothing.
            if (live.Last is var read && !ReferenceEquals(_membership, read))
            {
                _membership = read;
                ConsiderMembership(read);
            }

            // A node that cannot read who is live cannot mark either: the others count it gone after NodeTimeout and take
            // its share. It stops probing that share then, rather than probe beside them for as long as it is cut off.
            if ((time.GetElapsedTime(live.Last.ReadAt) > membership.Value.RefreshInterval + membership.Value.NodeTimeout) != _cutOff)
            {
                _cutOff = !_cutOff;
                _ownershipStale = true;
            }

            if (_ownershipStale)
            {
                _ownershipStale = false;
                Reconcile(_cutOff ? [] : _nodes);
            }

            StartDue(stoppingToken);
            if (_judgementWanted || time.GetElapsedTime(lastJudged) >= JudgementInterval)
            {
                lastJudged = time.GetTimestamp();
                _judgementWanted = false;
                // Swapped before judging: whoever waits on the one completed below wrote its outcome before it took it, so this judgement counts it.
                var judged = Interlocked.Exchange(ref _judged, new(TaskCreationOptions.RunContinuationsAsynchronously));
                try
                {
                    JudgeSelf();
                }
                finally
                {
                    // Never left waiting, should judging throw: the host then stops, and they with it.
                    judged.SetResult();
                }
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken));
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        // A read still in flight ends with the loop's token; it is awaited so none outlives the data source it uses.
        if (_reading is { } reading)
        {
            await ((Task)reading).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    /// <summary>
    /// Takes a new read of the live nodes as the one ownership follows. A node that joined counts
    /// at once (it only takes instances from the others). A node missing from one read may only
    /// have been late to mark itself: a pause of the whole process its node runs in (so every node
    /// in it marks late, this one included), or a slow database write. Taking its instances at once
    /// would have two nodes probe them until it is seen again; so they move only when a read most
    /// of a membership refresh later still misses that same node (two reads that each missed a
    /// different node have missed nobody twice). That costs a dead node's share one more read
    /// before it moves; a node that stopped says it left, and its share moves at once. This node
    /// follows the same rule for itself, so that every node reading the same table comes to the
    /// same ownership. Times are when the reads were made, not when this loop got to them.
    /// </summary>
    private void ConsiderMembership(MembershipRead read)
    {
        var now = read.ReadAt;
        var live = new SortedDictionary<string, Member>(read.Nodes.ToDictionary(n => n.Id, n => new Member(n.Id, n.ProbeNetworks, n.ProbesWithdrawn)), StringComparer.Ordinal);
        foreach (var member in _nodes)
        {
            var id = member.Id;
            if (live.ContainsKey(id) || read.Left.Contains(id))
            {
                // Seen, or said it left: no second read to wait for.
                _missedSince.Remove(id);
            }
            else if (!_missedSince.TryGetValue(id, out var since))
            {
                _missedSince[id] = now;
                live.Add(id, member);
            }
            else if (time.GetElapsedTime(since, now) < membership.Value.RefreshInterval * 0.75)
            {
                live.Add(id, member);
            }
            else
            {
                _missedSince.Remove(id);
            }
        }

        if (live.Count != _nodes.Length || !live.Values.Zip(_nodes).All(pair => pair.First.SameAs(pair.Second)))
        {
            _nodes = [.. live.Values];
            _ownershipStale = true;
        }
    }

    /// <summary>
    /// Reads the probed instances, but only when they changed since the last read: a digest of
    /// them (order-free, so that rows moved by lease renewals do not count) is compared first,
    /// in the same snapshot, so an unchanged set of 10,000 costs one row rather than 10,000.
    /// Null when they are as <paramref name="known"/> says, or cannot be read.
    /// </summary>
    private async Task<ProbedRead?> ReadProbedAsync(long? known, CancellationToken cancellationToken)
    {
        try
        {
            await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
            await using var transaction = await connection.BeginTransactionAsync(IsolationLevel.RepeatableRead, cancellationToken);
            long digest;
            await using (var digestCommand = new NpgsqlCommand(DigestStatement, connection, transaction))
            {
                digest = (long)(await digestCommand.ExecuteScalarAsync(cancellationToken))!;
            }

            _failing = false;
            if (digest == known)
            {
                return null;
            }

            await using var command = new NpgsqlCommand(
                "SELECT application, protocol, addr, probe_kind, probe_path, probe_interval_seconds, probe_credential FROM instances WHERE probe_kind IS NOT NULL",
                connection,
                transaction);
            var probed = new List<(InstanceKey, ProbeSpec)>();
            await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
            {
                while (await reader.ReadAsync(cancellationToken))
                {
                    probed.Add((
                        new InstanceKey(reader.GetString(0), reader.GetString(1), reader.GetString(2)),
                        new ProbeSpec(reader.GetString(3), reader.IsDBNull(4) ? null : reader.GetString(4), reader.GetInt32(5), reader.IsDBNull(6) ? null : reader.GetString(6))));
                }
            }

            return new ProbedRead(digest, probed);
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

            return null;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return null; // stopping
        }
    }

    /// <summary>The probed instances as read, and their digest.</summary>
    private sealed record ProbedRead(long Digest, List<(InstanceKey Key, ProbeSpec Spec)> Probed);

    /// <summary>
    /// Keeps the targets this node owns among those of <paramref name="nodes"/> that probe them
    /// (a node with probing off, or whose networks leave the address out, would only fail), not
    /// counting nodes that have withdrawn (<see cref="JudgeSelf"/>) unless only such nodes may
    /// probe it; a target whose probe changed starts afresh.
    /// </summary>
    private void Reconcile(Member[] nodes)
    {
        var owned = new Dictionary<InstanceKey, Target>();
        var now = time.GetTimestamp();
        var able = new List<string>(nodes.Length);
        var active = new List<string>(nodes.Length);
        var peers = new HashSet<string>(StringComparer.Ordinal);
        var intervals = new Dictionary<int, int>();
        foreach (var (key, spec) in _probed)
        {
            var item = $"{key.Application}\n{key.Protocol}\n{key.Addr}";
            var address = Literal(key.Addr);
            able.Clear();
            active.Clear();
            foreach (var member in nodes)
            {
                if (member.Probes(address))
                {
                    able.Add(member.Id);
                    if (!member.Withdrawn)
                    {
                        active.Add(member.Id);
                    }
                }
            }

            if (Rendezvous.Owner(item, active.Count > 0 ? active : able) != node.Id)
            {
                continue;
            }

            var interval = Seconds(spec.IntervalSeconds);
            if (!_owned.TryGetValue(key, out var target) || target.Spec != spec)
            {
                // The first probe at a point within the interval fixed by the key, so that many
                // instances taken over at once (a node died) are spread over the interval.
                target = new Target(key, spec, prober.Endpoint(key.Addr, spec), now + (long)(Rendezvous.Hash(item) % (ulong)Math.Max(1, interval)));
            }

            target.Shared = active.Count > (active.Contains(node.Id) ? 1 : 0);
            if (target.Shared)
            {
                peers.UnionWith(active);
                intervals[spec.IntervalSeconds] = intervals.GetValueOrDefault(spec.IntervalSeconds) + 1;
            }

            owned[key] = target;
        }

        _owned = owned;
        peers.Remove(node.Id);
        _peers = peers;
        _judgedWindow = JudgedWindow(intervals);
        _shortest = intervals.Count == 0 ? 0 : intervals.Keys.Min();
        _shortWindow = Seconds(_shortest + options.Value.TimeoutFor(_shortest));
        _due = new PriorityQueue<Target, long>(owned.Values.Select(t => (t, t.Due)));
        metrics.ProbesOwned(owned.Count);
    }

    /// <summary>A mark, two reads of the live nodes and a judged window: how long the others' answer to a change may take.</summary>
    private TimeSpan AnswerWait =>
        (2 * membership.Value.RefreshInterval) + leases.Value.LivenessInterval + TimeSpan.FromSeconds((double)_judgedWindow / time.TimestampFrequency);

    /// <summary>
    /// How far back <see cref="JudgeSelf"/> looks, given how many shared instances are probed at
    /// each interval: the shortest time in which <see cref="ProbeOptions.SuspectSelfMinInstances"/>
    /// of their probes are expected to end, so that those probed most often decide when they are
    /// enough, and those probed seldom count only once their probe is recent. At least one of the
    /// shortest intervals, at most <see cref="ProbeOptions.FailuresToEvict"/> of them (fewer probes
    /// than the minimum by then: no judgement), and a probe's timeout on top. 0 when none is shared.
    /// </summary>
    private long JudgedWindow(Dictionary<int, int> intervals)
    {
        if (intervals.Count == 0)
        {
            return 0;
        }

        var settings = options.Value;
        var shortest = intervals.Keys.Min();
        double Expected(double window) => intervals.Sum(i => i.Value * Math.Min(1, window / i.Key));
        var (low, high) = ((double)shortest, (double)shortest * settings.FailuresToEvict);
        if (Expected(low) < settings.SuspectSelfMinInstances)
        {
            for (var step = 0; step < 20 && Expected(high) >= settings.SuspectSelfMinInstances; step++)
            {
                var middle = (low + high) / 2;
                (low, high) = Expected(middle) >= settings.SuspectSelfMinInstances ? (low, middle) : (middle, high);
            }

            low = high;
        }

        return (long)((low + settings.TimeoutFor(shortest)) * time.TimestampFrequency);
    }

    /// <summary>
    /// Judges this node's own probes: the fraction of them that passed, over the last
    /// <see cref="_judgedWindow"/> and the instances another node could probe as well, goes out
    /// with its next mark. When it falls below <see cref="ProbeOptions.SuspectSelfBelow"/> (or the
    /// last probes of its instances probed most often nearly all fail) this node ends no lease until a read of
    /// the live nodes shows marks that all the others able to take its instances made since: if one
    /// of them passes at least half of its own, what fails is this
    /// node, not its instances (rendezvous gives every node a like sample of them): a route, a
    /// firewall, its own network. It then withdraws for <see cref="ProbeOptions.SuspectSelfFor"/>:
    /// it counts no failure and ends no lease, and its mark says so, so that every node (this one
    /// too) moves its share to the others at their next read of the live nodes; it keeps probing,
    /// and renewing, what only it may probe. Afterwards it takes a share again with no failure
    /// counted, ends no lease until it has judged its new share (or a mark, two reads and a window
    /// have passed), and withdraws again if it is still cut off. When the others fail alike (the
    /// instances are down, or the whole registry is cut off), it ends leases as they fail, about a
    /// mark and a read later than it would have, and self-preservation holds the evictions back as before.
    /// A peer with too few outcomes to judge says neither: while no peer has a rate to tell, it holds
    /// the ends for a mark, two reads and a window, in case one comes.
    /// </summary>
    private void JudgeSelf()
    {
        var now = time.GetTimestamp();
        var settings = options.Value;
        // The instances probed most often fail FailuresToEvict times before the judged window's rate falls: their last
        // probes failing, however few, already hold the ends back (a needless hold costs only a mark and a read).
        var (known, passed, recent, recentPassed) = Outcomes(now - _judgedWindow, now - _shortWindow);
        double? passing = known > 0 && known >= settings.SuspectSelfMinInstances ? (double)passed / known : null;
        double? recently = recent >= 2 ? (double)recentPassed / recent : null;
        if (passing < settings.SuspectSelfBelow || recently < settings.SuspectSelfBelow)
        {
            _lowSince ??= clock.UtcNow;
        }
        else if (passing is not null || recently is not null)
        {
            // Too few outcomes for a moment (a change of share) neither starts nor ends a suspicion.
            _lowSince = null;
        }

        var standing = capabilities.Probes;
        var withdrawn = standing.Withdrawn;
        // Only marks the others made after this node's probes began to fail say how theirs go meanwhile.
        var peers = live.Last.Nodes.Where(n => _peers.Contains(n.Id) && n.ProbeNetworks is not null && !n.ProbesWithdrawn).ToList();
        var answered = _lowSince is { } lowSince && peers.All(n => n.LastSeen > lowSince + JudgementInterval);
        var passingPeer = answered ? peers.FirstOrDefault(n => n.ProbesPassing >= 0.5) : null;
        // The others fail alike when one of them says so, or when none has said anything for a mark, two reads and a
        // window. A peer with too few outcomes to judge publishes no rate: taken for failing at once, it had a cut-off node
        // end the leases of its instances probed most often whenever a peer's count dipped below the minimum at a mark.
        // Waited for without end, it would keep a small cluster's dead instances listed until their leases ran out.
        var othersFailToo = answered && passingPeer is null
            && (peers.Count == 0 || peers.Any(n => n.ProbesPassing < 0.5) || clock.UtcNow - _lowSince > AnswerWait);
        if (withdrawn && now >= _withdrawnUntil)
        {
            withdrawn = false;
            _lowSince = null;
            _epoch++;
            _rejoinHold = now + (long)(AnswerWait.TotalSeconds * time.TimestampFrequency);
            LogRejoined(logger);
        }
        else if (!withdrawn && passingPeer is { } other && passing is { } low && low < settings.SuspectSelfBelow)
        {
            withdrawn = true;
            _withdrawnUntil = now + (long)(settings.SuspectSelfFor.TotalSeconds * time.TimestampFrequency);
            _epoch++;
            LogWithdrew(logger, low, known, other.Id, other.ProbesPassing!.Value, settings.SuspectSelfFor);
        }

        if (passing is not null)
        {
            _rejoinHold = 0;
        }

        // Held while the others' answer is awaited, and while it points at this node but its own rate has yet to confirm it.
        _holdEnds = withdrawn || (_lowSince is not null && !othersFailToo) || now < _rejoinHold;
        if (standing.Passing != passing || standing.Withdrawn != withdrawn)
        {
            capabilities.Probes = new ProbeStanding(passing, withdrawn);
            metrics.ProbesWithdrawn(withdrawn);
        }
    }

    /// <summary>
    /// Whether this node holds lease ends back, as judged after the caller's outcome was recorded: a lease is ended
    /// on a failure only once <see cref="JudgeSelf"/> has counted that failure with every other outcome it has, so
    /// that when all of this node's probes begin to fail at once, the failure that would end the first lease is
    /// one of those that start the suspicion, however late the loop runs. Costs a tick (at most 50 ms) per end.
    /// </summary>
    private async Task<bool> HoldsEndsAsync(CancellationToken cancellationToken)
    {
        // A full fence between the outcome's write and this read, as the loop has one between its swap and its reads
        // of outcomes: whichever comes first, the judgement that completes this task counts the outcome.
        Interlocked.MemoryBarrier();
        var judged = Volatile.Read(ref _judged).Task;
        _judgementWanted = true;
        await judged.WaitAsync(cancellationToken);
        return _holdEnds;
    }

    /// <summary>
    /// Of the shared instances whose last probe ended since <paramref name="since"/> (timestamp ticks), how many, and how
    /// many passed; and the same of those probed most often whose last probe ended since <paramref name="recentSince"/>.
    /// </summary>
    private (int Known, int Passed, int Recent, int RecentPassed) Outcomes(long since, long recentSince)
    {
        var (known, passed, recent, recentPassed) = (0, 0, 0, 0);
        foreach (var target in _owned.Values)
        {
            if (!target.Shared || Volatile.Read(ref target.OutcomeAt) is var at && at == 0)
            {
                continue;
            }

            var pass = target.LastPassed ? 1 : 0;
            if (at >= since)
            {
                known++;
                passed += pass;
            }

            if (at >= recentSince && target.Spec.IntervalSeconds == _shortest)
            {
                recent++;
                recentPassed += pass;
            }
        }

        return (known, passed, recent, recentPassed);
    }

    /// <summary>The IP address <paramref name="addr"/> names; null for a DNS name (or an addr registration would not have taken).</summary>
    private static IPAddress? Literal(string addr) =>
        addr.LastIndexOf(':') is > 0 and var colon && IPAddress.TryParse(addr.AsSpan(0, colon).Trim("[]"), out var address) ? address : null;

    private void StartDue(CancellationToken stoppingToken)
    {
        var now = time.GetTimestamp();
        List<Target>? stillRunning = null;
        while (_due.TryPeek(out var target, out var due) && due <= now)
        {
            if (target.Running)
            {
                // Its last probe has not finished: it starts as soon as it has (a later tick).
                _due.Dequeue();
                (stillRunning ??= []).Add(target);
                continue;
            }

            if (!_slots.Wait(0, CancellationToken.None))
            {
                break; // at the cap: the rest start late, and the lateness shows
            }

            _due.Dequeue();
            metrics.ProbeLate(time.GetElapsedTime(target.Due, now));
            var interval = Seconds(target.Spec.IntervalSeconds);
            // Keep the cadence and its phase (spread over the interval by the key, see Reconcile): after a long stall the
            // periods missed are skipped, rather than every overdue target taking the same next time for good.
            target.Due += ((Math.Max(0, now - target.Due) / interval) + 1) * interval;
            target.Running = true;
            _due.Enqueue(target, target.Due);
            _ = RunAsync(target, stoppingToken);
        }

        foreach (var target in stillRunning ?? [])
        {
            _due.Enqueue(target, target.Due);
        }
    }

    private async Task RunAsync(Target target, CancellationToken stoppingToken)
    {
        try
        {
            if (target.CredentialEnded || (target.Spec.Credential is { } credential && !tokens.Holds(credential) && await EndForCredentialAsync(target, credential, stoppingToken)))
            {
                return;
            }

            var started = time.GetTimestamp();
            var timeout = TimeSpan.FromSeconds(options.Value.TimeoutFor(target.Spec.IntervalSeconds));
            var passed = await prober.ProbeAsync(target.Endpoint, timeout, stoppingToken);
            var duration = time.GetElapsedTime(started);
            var instance = state.Find(target.Key);
            if (instance?.Revision != target.Revision)
            {
                // Registered again (or gone): what failed before counts against the old
                // registration, whose lease this node may have ended, not against the new one.
                target.Revision = instance?.Revision;
                target.Failures = 0;
                target.Ended = false;
            }

            if (target.Epoch != _epoch)
            {
                // Counted before this node withdrew or came back: they may have been its own.
                target.Epoch = _epoch;
                target.Failures = 0;
            }

            // While this node suspects itself, its failures say nothing of the instance.
            target.Failures = passed ? 0 : capabilities.Probes.Withdrawn ? target.Failures : target.Failures + 1;
            target.LastPassed = passed;
            Volatile.Write(ref target.OutcomeAt, time.GetTimestamp());
            // Counted once the outcome is, so whoever reads the metric sees the count it went into.
            metrics.Probed(target.Spec.Kind, passed, duration);
            if (!ReferenceEquals(_owned.GetValueOrDefault(target.Key), target))
            {
                // Moved to another node (or dropped) while this probe ran: its outcome is the new owner's to judge. A late
                // end here would undo the lease the new owner's first pass wrote, which no memory would hear of.
                return;
            }

            if (passed)
            {
                if (target.Ended)
                {
                    target.Ended = !await ReviveAsync(target.Key, stoppingToken);
                    target.Written = !target.Ended;
                }
                else if (instance is not null)
                {
                    // Null when this node cannot record renewals now; the next pass tries again. The first pass of an
                    // instance this node has taken over is written whatever memory says: the node that probed it
                    // before may have ended its lease, which no node's memory hears of.
                    target.Written = (target.Written ? renewer.Renew(instance) : renewer.RenewWritten(instance)) is not null;
                }
            }
            else if (target.Failures >= options.Value.FailuresToEvict && !target.Ended && target.Revision is { } counted && !await HoldsEndsAsync(stoppingToken)
                && ReferenceEquals(_owned.GetValueOrDefault(target.Key), target))
            {
                // (Still this node's after the wait for a judgement, which follows a reconcile that may have moved it.)
                // Not while this node holds no registration of it: the failures could not be
                // told apart from a registration it has not applied yet. Nor while it suspects
                // itself (JudgeSelf): the failures may be its own; the next failure tries again.
                target.Ended = await EndLeaseAsync(target.Key, counted, stoppingToken);
                if (target.Ended)
                {
                    metrics.ProbeEvicted();
                    audit.ProbeFailed(target.Key, target.Failures, node.Id);
                }
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
    /// The registry token that asked for the probe is revoked or has expired, as this node's token cache says: only a
    /// valid credential keeps an instance registered (a session closes, heartbeats are refused). The database has the
    /// last word: the lease ends, as after failed probes, only while the registration is still the one that token asked
    /// for and the token is gone there too (a cache that lags, or a registration made since with another credential,
    /// ends nothing). Then the instance is probed no more; registering it again with a valid credential starts afresh.
    /// </summary>
    private async Task<bool> EndForCredentialAsync(Target target, string credential, CancellationToken cancellationToken)
    {
        if (state.Find(target.Key) is not { } instance || !await EndLeaseAsync(target.Key, instance.Revision, cancellationToken, credential))
        {
            return false;
        }

        target.CredentialEnded = true;
        LogCredentialEnded(logger, target.Key.Application, target.Key.Addr, credential);
        return true;
    }

    /// <summary>
    /// Ends the lease now rather than deleting the row: the sweeper then evicts it with every
    /// other expired lease, so probe evictions share self-preservation's budget, its count in
    /// <c>evictions</c>, its audit and its notifications. Only while the instance is still probed
    /// and still the registration the failures were counted against: a registration that came
    /// after them, and that this node has not applied yet, starts a count of its own. With a
    /// <c>credential</c>, only while the probe was asked for with that token, and the token is revoked or expired.
    /// </summary>
    private async Task<bool> EndLeaseAsync(InstanceKey key, long revision, CancellationToken cancellationToken, string? credential = null)
    {
        await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            $"""
            UPDATE instances i SET expires_at = clock_timestamp() - interval '1 millisecond'
             WHERE application = @application AND protocol = @protocol AND addr = @addr AND probe_kind IS NOT NULL
               AND revision = @revision
               AND (@credential IS NULL OR (i.probe_credential = @credential AND NOT EXISTS (
                    SELECT 1 FROM {Schema.TokensTable} t WHERE t.id = @credential AND (t.expires_at IS NULL OR t.expires_at > now()))))
            RETURNING expires_at
            """, connection);
        AddKey(command, key);
        command.Parameters.Add(new NpgsqlParameter<long>("revision", revision));
        command.Parameters.Add(new NpgsqlParameter("credential", NpgsqlTypes.NpgsqlDbType.Text) { Value = (object?)credential ?? DBNull.Value });
        if (await command.ExecuteScalarAsync(cancellationToken) is not DateTime ended)
        {
            return false; // unregistered, no longer probed, or registered again meanwhile
        }

        schedule.Consider(new DateTimeOffset(ended, TimeSpan.Zero));
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

    [LoggerMessage(Level = LogLevel.Warning, Message = "Probes: only {Passing:P0} of this node's {Probes} recent probes passed, while node {Other} passes {OtherPassing:P0} of its own: this node is cut off from those instances, not they from everyone. For {Period} it counts no failure and leaves its share to the other nodes")]
    private static partial void LogWithdrew(ILogger logger, double passing, int probes, string other, double otherPassing, TimeSpan period);

    [LoggerMessage(Level = LogLevel.Information, Message = "Probes: this node takes its share of probing again after withdrawing (it withdraws again if its probes still fail)")]
    private static partial void LogRejoined(ILogger logger);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Probes: {Application} {Addr} was registered for probing with token {Credential}, which is revoked or has expired; it is probed no more and its lease is ended")]
    private static partial void LogCredentialEnded(ILogger logger, string application, string addr, string credential);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot read the probed instances; probing those already known")]
    private static partial void LogReadFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot record a probe's outcome for {Application} {Addr}; the next probe tries again")]
    private static partial void LogWriteFailed(ILogger logger, string application, string addr, Exception exception);
}
