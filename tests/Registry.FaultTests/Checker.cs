using System.Globalization;
using System.Text;
using Registry.FaultTests.Infrastructure;

namespace Registry.FaultTests;

/// <summary>A broken promise, with what to print to show it.</summary>
public sealed record Violation(string Check, string Application, string? Addr, DateTimeOffset At, string Message)
{
    public override string ToString() => $"[{Check}] {Application}{(Addr is null ? "" : "/" + Addr)} at {Op.Time(At)}: {Message}";
}

/// <summary>
/// The checks, run at quiescence against the database: the live checks ask the nodes and
/// consumers until they agree with the table or a deadline passes; the history checks read the
/// recorded operations against the trigger's row history of the table.
/// </summary>
public sealed class Checker(Func<string> database, RegistryApi api, History history)
{
    private static readonly TimeSpan Tolerance = TimeSpan.FromMilliseconds(500);

    /// <summary>How soon after the database is back the grace rule runs (a reconnect and a sweep interval, generously).</summary>
    private static readonly TimeSpan GraceDelay = TimeSpan.FromSeconds(10);

    public List<Violation> Violations { get; } = [.. history.Violations];

    /// <summary>Every application the history touched.</summary>
    public IReadOnlyList<string> Applications() =>
        Workload.Applications.Concat(history.Ops.Where(o => o.Kind != OpKind.Poll).Select(o => o.Application)).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();

    /// <summary>Every node's answer for every application equals the table's content (the table must hold still while it is compared).</summary>
    public async Task NodesServeTheTableAsync(TimeSpan deadline, CancellationToken cancellationToken)
    {
        var until = DateTimeOffset.UtcNow + deadline;
        var applications = Applications();
        while (true)
        {
            var before = await RegistryTables.TableAsync(database(), cancellationToken);
            var differences = new List<Violation>();
            foreach (var application in applications)
            {
                var expected = before.GetValueOrDefault(application) ?? [];
                for (var node = 0; node < api.NodeCount; node++)
                {
                    var served = await api.ServedAsync(node, application, cancellationToken);
                    if (served is null)
                    {
                        differences.Add(new Violation("node-serves-table", application, null, DateTimeOffset.UtcNow, $"node{node} did not answer"));
                    }
                    else if (Difference(expected, served.Value.Endpoints) is { } difference)
                    {
                        differences.Add(new Violation("node-serves-table", application, null, DateTimeOffset.UtcNow, $"node{node} serves what the table does not hold: {difference}"));
                    }
                }
            }

            var after = await RegistryTables.TableAsync(database(), cancellationToken);
            var still = differences.Where(d => Same(before.GetValueOrDefault(d.Application), after.GetValueOrDefault(d.Application))).ToList();
            if (differences.Count == 0 || DateTimeOffset.UtcNow > until)
            {
                Violations.AddRange(still);
                return;
            }

            await Task.Delay(500, cancellationToken);
        }
    }

    /// <summary>Every parked consumer's last answer is the table's content for its subscription, with the version its node gives now.</summary>
    public async Task ConsumersHoldTheFinalVersionAsync(IReadOnlyList<Consumer> consumers, TimeSpan deadline, CancellationToken cancellationToken)
    {
        var until = DateTimeOffset.UtcNow + deadline;
        var pending = consumers.ToList();
        while (true)
        {
            var table = await RegistryTables.TableAsync(database(), cancellationToken);
            var failing = new List<Violation>();
            foreach (var consumer in pending)
            {
                var (node, interests, last) = consumer.Snapshot();
                var expected = table.Values.SelectMany(e => e).Where(e => interests.Any(i => i.Matches(e))).ToList();
                var subject = string.Join("+", interests);
                if (last is null)
                {
                    failing.Add(new Violation("consumer-final-version", subject, null, DateTimeOffset.UtcNow, $"{consumer.Name} on node{node} has no answer"));
                    continue;
                }

                if (Difference(expected, last.Endpoints) is { } difference)
                {
                    failing.Add(new Violation("consumer-final-version", subject, null, last.At,
                        $"{consumer.Name} parked on node{node} last answered at {Op.Time(last.At)} version {last.Version}: {difference}"));
                    continue;
                }

                var (_, fresh) = await api.SubscribeAsync("checker", node, interests, null, 0, cancellationToken);
                if (fresh is not null && fresh.Version != last.Version)
                {
                    failing.Add(new Violation("consumer-final-version", subject, null, last.At,
                        $"{consumer.Name} holds version {last.Version} but node{node} now answers {fresh.Version} for the same content"));
                }
            }

            if (failing.Count == 0 || DateTimeOffset.UtcNow > until)
            {
                Violations.AddRange(failing);
                return;
            }

            await Task.Delay(500, cancellationToken);
        }
    }

    /// <summary>
    /// Per instance, operations are sequential (one client owns each), and each registration
    /// carries a unique <c>meta.w</c>: so the table's row history must hold every
    /// acknowledged registration, in the order they were made, and a delete for every
    /// acknowledged unregistration.
    /// </summary>
    public void NoAcknowledgedWriteLostOrReordered(IReadOnlyList<RowEvent> rows)
    {
        var rowsByKey = rows.ToLookup(r => (r.Application, r.Addr));
        foreach (var ops in WritesByKey())
        {
            var (application, addr) = ops.Key;
            var list = ops.OrderBy(o => o.Id).ToList();
            var events = rowsByKey[(application, addr)].ToList();
            var index = list.Select((o, i) => (o, i)).Where(x => x.o.Write is not null).ToDictionary(x => x.o.Write!, x => x.i, StringComparer.Ordinal);
            var written = events.Select((e, position) => (e, position, op: e.Change is 'I' or 'U' && e.Write is not null && index.TryGetValue(e.Write, out var i) ? i : -1)).ToList();

            for (var i = 0; i < list.Count; i++)
            {
                var op = list[i];
                if (op.Outcome != Outcome.Acknowledged)
                {
                    continue;
                }

                if (op.Kind == OpKind.Register && written.All(w => w.op != i))
                {
                    Violations.Add(new Violation("write-lost", application, addr, op.Completed, $"registration #{op.Id} (w={op.Write}) answered {op.Status} but never reached the table"));
                }
                else if (op.Kind == OpKind.Unregister)
                {
                    var from = written.LastOrDefault(w => w.op >= 0 && w.op < i).position;
                    var to = written.FirstOrDefault(w => w.op > i) is { e: not null } next ? next.position : events.Count;
                    if (!events.Skip(from).Take(to - from).Any(e => e.Change == 'D' && e.Kind == "write"))
                    {
                        Violations.Add(new Violation("write-lost", application, addr, op.Completed, $"unregistration #{op.Id} answered {op.Status} but the row was never deleted by it"));
                    }
                }
            }

            var order = written.Where(w => w.op >= 0).ToList();
            for (var j = 1; j < order.Count; j++)
            {
                if (order[j].op < order[j - 1].op)
                {
                    Violations.Add(new Violation("write-reordered", application, addr, order[j].e.At,
                        $"registration #{list[order[j].op].Id} reached the table after the later #{list[order[j - 1].op].Id}"));
                }
            }
        }
    }

    /// <summary>
    /// An instance is never evicted before the lease its last acknowledged register or heartbeat
    /// promised (the <c>expires</c> in the answer), and no heartbeat is acknowledged for an
    /// instance the table no longer holds.
    /// </summary>
    public void NoEvictionWithinAcknowledgedLease(IReadOnlyList<RowEvent> rows)
    {
        var opsByKey = history.Ops.Where(o => o.Kind is OpKind.Register or OpKind.Heartbeat or OpKind.Unregister).ToLookup(o => (o.Application, o.Addr));
        var rowsByKey = rows.ToLookup(r => (r.Application, r.Addr));
        foreach (var eviction in rows.Where(r => r.Change == 'D' && r.Kind == "sweep"))
        {
            var key = (eviction.Application, eviction.Addr);
            var ops = opsByKey[key].OrderBy(o => o.Id).ToList();
            // Only registrations that reached the table before the eviction: one in flight across it whose row
            // came after (the sweep deleted the lease before it, which had run out) promised a new row, not that one.
            var writtenBefore = rowsByKey[key].Where(r => r.Change is 'I' or 'U' && r.At < eviction.At).Select(r => r.Write).ToHashSet(StringComparer.Ordinal);
            var lastRegister = ops.FindLastIndex(o => o.Kind == OpKind.Register && o.Invoked < eviction.At && writtenBefore.Contains(o.Write));
            if (lastRegister < 0)
            {
                continue;
            }

            var promise = ops.Skip(lastRegister)
                .Where(o => o.Kind != OpKind.Unregister && o.Outcome == Outcome.Acknowledged && o.Invoked < eviction.At && o.Expires is not null
                    && (o.Kind == OpKind.Heartbeat || writtenBefore.Contains(o.Write)))
                .MaxBy(o => o.Expires);
            if (promise is not null && promise.Expires > eviction.At + Tolerance)
            {
                Violations.Add(new Violation("evicted-within-lease", eviction.Application, eviction.Addr, eviction.At,
                    $"evicted at {Op.Time(eviction.At)} although #{promise.Id} ({promise.Kind} through node{promise.Node}) promised the lease until {Op.Time(promise.Expires!.Value)}"));
            }

            var reRegistered = rowsByKey[key].Where(r => r.Change == 'I' && r.At > eviction.At).Select(r => r.At).DefaultIfEmpty(DateTimeOffset.MaxValue).Min();
            foreach (var lie in ops.Where(o => o.Kind == OpKind.Heartbeat && o.Outcome == Outcome.Acknowledged
                && o.Invoked > eviction.At + TimeSpan.FromSeconds(1) && o.Completed < reRegistered))
            {
                Violations.Add(new Violation("heartbeat-not-recorded", eviction.Application, eviction.Addr, lie.Completed,
                    $"heartbeat #{lie.Id} through node{lie.Node} answered {lie.Status} {Op.Time(lie.Completed)}, but the instance had been evicted at {Op.Time(eviction.At)}"));
                break;
            }
        }
    }

    /// <summary>Each eviction reaches the change feed: one notification naming the instance (or its whole application).</summary>
    public void EachExpiryNotifiedOnce(IReadOnlyList<RowEvent> rows)
    {
        var notices = history.Notices.ToLookup(n => n.Application, StringComparer.Ordinal);
        var gaps = history.ListenerGaps.ToList();
        var rowsByKey = rows.ToLookup(r => (r.Application, r.Addr));
        foreach (var eviction in rows.Where(r => r.Change == 'D' && r.Kind == "sweep"))
        {
            if (gaps.Any(g => eviction.At > g.From - TimeSpan.FromSeconds(1) && eviction.At < g.To + TimeSpan.FromSeconds(1)))
            {
                continue; // the test's own LISTEN session was reconnecting
            }

            var next = rowsByKey[(eviction.Application, eviction.Addr)].Where(r => r.Id > eviction.Id).Select(r => r.At).DefaultIfEmpty(DateTimeOffset.MaxValue).Min();
            var end = new[] { next, eviction.At + TimeSpan.FromSeconds(5) }.Min();
            var covering = notices[eviction.Application].Where(n => n.At >= eviction.At - TimeSpan.FromMilliseconds(200) && n.At < end).ToList();
            var naming = covering.Count(n => n.Addrs?.Any(a => a.EndsWith(" " + eviction.Addr, StringComparison.Ordinal)) == true);
            if (covering.Count == 0)
            {
                Violations.Add(new Violation("expiry-notified-once", eviction.Application, eviction.Addr, eviction.At, "evicted without a notification"));
            }
            else if (naming > 1)
            {
                Violations.Add(new Violation("expiry-notified-once", eviction.Application, eviction.Addr, eviction.At, $"the eviction was notified {naming} times"));
            }
        }
    }

    /// <summary>Within any self-preservation window the whole cluster evicts no more than the budget one node may.</summary>
    public void SelfPreservationBudgetHeldClusterWide(IReadOnlyList<RowEvent> rows)
    {
        var window = FaultCluster.SelfPreservationWindow;
        var evictions = rows.Where(r => r.Change == 'D' && r.Kind == "sweep").OrderBy(r => r.At).ToList();
        var population = Population(rows, evictions, window);
        var end = 0;
        for (var start = 0; start < evictions.Count; start++)
        {
            var from = evictions[start].At;
            while (end < evictions.Count && evictions[end].At < from + window)
            {
                end++;
            }

            // The largest population any sweep in or just before the window could have counted.
            var live = population.Where(p => p.At > from - window && p.At < from + window).Select(p => p.Count).DefaultIfEmpty(0).Max();
            var budget = Math.Max((int)(FaultCluster.SelfPreservationShare * live), FaultCluster.SelfPreservationMinInstances);
            if (end - start > budget + 1)
            {
                var sweeps = evictions.Skip(start).Take(end - start).GroupBy(e => e.Transaction).Select(g => $"{g.Count()} at {Op.Time(g.First().At)} (tx {g.Key})");
                Violations.Add(new Violation("self-preservation-budget", string.Join(",", evictions.Skip(start).Take(end - start).Select(e => e.Application).Distinct()), null, from,
                    $"{end - start} instances evicted within {window.TotalSeconds:F0} s from {Op.Time(from)}; the cluster-wide budget is {budget} (share {FaultCluster.SelfPreservationShare} of up to {live} live and recently evicted, at least {FaultCluster.SelfPreservationMinInstances}); sweeps: {string.Join(", ", sweeps)}"));
                return; // one window shows it
            }
        }
    }

    /// <summary>
    /// The population self-preservation measures (the rows in the table plus those evicted within
    /// the window before), after every row change: exact, from the recorder, which saw the table
    /// from empty. A sample every so often misses a deploy registered just before a sweep counts it.
    /// </summary>
    private static List<(DateTimeOffset At, int Count)> Population(IReadOnlyList<RowEvent> rows, List<RowEvent> evictions, TimeSpan window)
    {
        var population = new List<(DateTimeOffset At, int Count)>();
        var size = 0;
        int evicted = 0, windowStart = 0;
        foreach (var row in rows.Where(r => r.Change is 'I' or 'D').OrderBy(r => r.Id))
        {
            size += row.Change == 'I' ? 1 : -1;
            while (evicted < evictions.Count && evictions[evicted].At <= row.At)
            {
                evicted++;
            }

            while (windowStart < evicted && evictions[windowStart].At <= row.At - window)
            {
                windowStart++;
            }

            population.Add((row.At, size + evicted - windowStart));
        }

        return population;
    }

    /// <summary>
    /// The grace rule extends leases only after a cluster-wide outage (here: PostgreSQL
    /// restarted) and never revives a lease that had run out before the outage began.
    /// </summary>
    public void GraceOnlyAfterClusterOutage(IReadOnlyList<RowEvent> rows)
    {
        var outages = history.Faults.Where(f => f.Kind == "postgres-restart").ToList();
        foreach (var extension in rows.Where(r => r.Change == 'E'))
        {
            var outage = outages.Where(o => o.Ended <= extension.At + Tolerance && o.Ended > extension.At - GraceDelay).MaxBy(o => o.Ended);
            if (outage is null)
            {
                Violations.Add(new Violation("grace-without-outage", extension.Application, extension.Addr, extension.At,
                    $"lease moved from {Op.Time(extension.OldExpires!.Value)} to {Op.Time(extension.NewExpires!.Value)} by '{extension.Kind}' with no cluster-wide outage before it"));
            }
            // The cluster knows when an outage began only to within a liveness mark.
            else if (extension.OldExpires < outage.Started - FaultCluster.LivenessInterval - Tolerance)
            {
                Violations.Add(new Violation("grace-revived-expired", extension.Application, extension.Addr, extension.At,
                    $"lease that ran out at {Op.Time(extension.OldExpires!.Value)}, before the outage began at {Op.Time(outage.Started)}, revived until {Op.Time(extension.NewExpires!.Value)}"));
            }
        }
    }

    /// <summary>The violations, each with the part of the history that shows it (the operations and row changes of its instance or application, and the faults around them).</summary>
    public string Report(IReadOnlyList<RowEvent> rows, int maxPerViolation = 40)
    {
        var text = new StringBuilder();
        text.AppendLine(string.Join(", ", Violations.GroupBy(v => v.Check).Select(g => $"{g.Key}: {g.Count()}")));
        // One example per check and subject is enough to act on; the rest are counted.
        foreach (var group in Violations.GroupBy(v => v.Check))
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"== {group.Key}: {group.Count()} violation(s)");
            foreach (var violation in group.Take(3))
            {
                text.AppendLine(CultureInfo.InvariantCulture, $"  {violation}");
                foreach (var line in Evidence(violation, rows).TakeLast(maxPerViolation))
                {
                    text.AppendLine(CultureInfo.InvariantCulture, $"      {line}");
                }
            }

            foreach (var violation in group.Skip(3).Take(5))
            {
                text.AppendLine(CultureInfo.InvariantCulture, $"  {violation}");
            }
        }

        return text.ToString();
    }

    private IEnumerable<string> Evidence(Violation violation, IReadOnlyList<RowEvent> rows)
    {
        var applications = violation.Application.Split('+', ',').Select(a => a.Split('/', '[')[0]).ToHashSet(StringComparer.Ordinal);
        bool Concerns(string application, string addr) =>
            applications.Contains(application) && (violation.Addr is null || violation.Addr == addr);

        var ops = history.Ops.Where(o => o.Kind != OpKind.Poll && Concerns(o.Application, o.Addr)).ToList();
        if (violation.Addr is null)
        {
            // An application-wide view: its writes in the last 20 s before the check, not every heartbeat.
            ops = ops.Where(o => o.Kind != OpKind.Heartbeat && o.Invoked > violation.At - TimeSpan.FromSeconds(90)).ToList();
        }

        var related = rows.Where(r => Concerns(r.Application, r.Addr) && (violation.Addr is not null || r.Change != 'E')).ToList();
        // The instance's last lifetime (from its last registration) up to the violation, with the faults during it.
        var lastRegister = ops.Where(o => o.Kind == OpKind.Register && o.Invoked < violation.At - TimeSpan.FromSeconds(1)).Select(o => o.Invoked).DefaultIfEmpty(DateTimeOffset.MinValue).Max();
        var first = new[] { lastRegister, violation.At - TimeSpan.FromSeconds(20) }.Max();
        var last = violation.At + TimeSpan.FromSeconds(2);
        return ops.Where(o => o.Invoked >= first && o.Invoked <= last).Select(o => (o.Invoked, o.ToString()))
            .Concat(related.Where(r => r.At >= first && r.At <= last).Select(r => (r.At, r.ToString())))
            .Concat(history.Faults.Where(f => f.Ended >= first && f.Started <= violation.At).Select(f => (f.Started, f.ToString())))
            .OrderBy(l => l.Item1)
            .Select(l => l.Item2);
    }

    private IEnumerable<IGrouping<(string Application, string Addr), Op>> WritesByKey() =>
        history.Ops.Where(o => o.Kind is OpKind.Register or OpKind.Unregister).GroupBy(o => (o.Application, o.Addr));

    private static bool Same(List<Endpoint>? a, List<Endpoint>? b) =>
        (a ?? []).SequenceEqual(b ?? []);

    internal static string? Difference(IReadOnlyList<Endpoint> expected, IReadOnlyList<Endpoint> served)
    {
        var missing = expected.Except(served).ToList();
        var extra = served.Except(expected).ToList();
        if (missing.Count == 0 && extra.Count == 0)
        {
            return null;
        }

        static string Show(List<Endpoint> list) =>
            list.Count == 0 ? "none" : string.Join("; ", list.Take(4).Select(e => e.ToString())) + (list.Count > 4 ? $"; and {list.Count - 4} more" : "");

        return $"table has but node lacks: {Show(missing)}; node has but table lacks: {Show(extra)}";
    }
}
