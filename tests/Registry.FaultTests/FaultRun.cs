using System.Net;
using Registry.FaultTests.Infrastructure;
using Xunit.Abstractions;

namespace Registry.FaultTests;

/// <summary>The outcome of one seed: the broken promises with their evidence, and where the history was written.</summary>
public sealed record RunResult(IReadOnlyList<Violation> Violations, string Report, string LogFolder);

/// <summary>
/// One seeded run: start the cluster, let the clients and the fault injector loose for
/// <c>runFor</c>, heal, quiesce, then check.
/// </summary>
public sealed class FaultRun(int seed, TimeSpan runFor, ITestOutputHelper output)
{
    public async Task<RunResult> ExecuteAsync(CancellationToken cancellationToken)
    {
        var history = new History();
        var logFolder = Path.Combine(AppContext.BaseDirectory, "fault-runs", $"seed-{seed}-{DateTimeOffset.UtcNow:HHmmss}");
        await using var cluster = await FaultCluster.StartAsync(history, logFolder, cancellationToken);
        using var handler = new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromSeconds(2),
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(10),
            MaxConnectionsPerServer = 512,
        };
        using var http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan, DefaultRequestVersion = HttpVersion.Version11 };
        var api = new RegistryApi(http, history, cluster.Nodes);
        var workload = new Workload(api, history, seed);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var clients = workload.RunAsync(runFor, stop.Token);

        await new FaultInjector(cluster, api, history, seed).RunAsync(runFor, cancellationToken);
        output.WriteLine($"seed {seed}: {history.Faults.Count} faults injected; quiescing");
        workload.Quiesce();
        await cluster.WaitReadyAsync(TimeSpan.FromSeconds(60), cancellationToken);

        var checker = new Checker(() => cluster.Database.ConnectionString, api, history);
        // Long enough for two of the nodes' consistency checks: a node that misses a change must repair it by then.
        await checker.NodesServeTheTableAsync(FaultCluster.ConsistencyCheckInterval * 3 + TimeSpan.FromSeconds(5), cancellationToken);
        await checker.ConsumersHoldTheFinalVersionAsync(workload.ConsumerStates, TimeSpan.FromSeconds(8), cancellationToken);
        await stop.CancelAsync();
        await clients;

        var rows = await RegistryTables.RowEventsAsync(cluster.Database.ConnectionString, cancellationToken);
        checker.NoAcknowledgedWriteLostOrReordered(rows);
        checker.NoEvictionWithinAcknowledgedLease(rows);
        checker.EachExpiryNotifiedOnce(rows);
        checker.SelfPreservationBudgetHeldClusterWide(rows);
        checker.GraceOnlyAfterClusterOutage(rows);

        await File.WriteAllTextAsync(Path.Combine(logFolder, "history.txt"), history.Dump(rows), cancellationToken);
        var table = FaultCosts.Table(FaultCosts.Measure(history), history);
        await File.WriteAllTextAsync(Path.Combine(logFolder, "costs.md"), table, cancellationToken);
        var report = checker.Report(rows);
        output.WriteLine($"seed {seed}: {history.Ops.Count} operations, {rows.Count} row changes, {history.Notices.Count} notifications, {checker.Violations.Count} violations; history in {logFolder}");
        foreach (var fault in history.Faults)
        {
            output.WriteLine($"  {fault}");
        }

        output.WriteLine(table);
        return new RunResult(checker.Violations, report, logFolder);
    }
}
