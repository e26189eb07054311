using System.Diagnostics;
using System.Globalization;
using System.Net;
using Npgsql;
using Registry.FaultTests.Infrastructure;
using Xunit.Abstractions;

namespace Registry.FaultTests;

/// <summary>
/// PostgreSQL high availability as the registry is meant to run it: a streaming replica made
/// with pg_basebackup, nodes on a multi-host connection string, the primary stopped and the
/// replica promoted (what a failover manager does).
/// </summary>
public sealed class FailoverTests(ITestOutputHelper output)
{
    private const int Instances = 30;
    private const int Ttl = 6;

    [Fact]
    public async Task NodesFollowAPromotedReplicaWithoutEvictingTheFleet()
    {
        var cancellationToken = CancellationToken.None;
        await using var primary = await PostgresServer.StartNewAsync(cancellationToken);
        await using var replica = await primary.StartReplicaAsync(cancellationToken);
        var connectionString = new NpgsqlConnectionStringBuilder(primary.ConnectionString)
        {
            Host = $"127.0.0.1:{primary.Port},127.0.0.1:{replica.Port}",
            TargetSessionAttributes = "primary",
        }.ConnectionString;

        var history = new History();
        var logFolder = Path.Combine(AppContext.BaseDirectory, "fault-runs", $"failover-{DateTimeOffset.UtcNow:HHmmss}");
        var nodes = Enumerable.Range(0, FaultCluster.NodeCount)
            .Select(i => new NodeProcess($"node{i}", Registry.Benchmarks.ServerLocator.Find(null), FaultCluster.NodeEnvironment(connectionString), logFolder))
            .ToList();
        try
        {
            await nodes[0].StartAsync(cancellationToken);
            await nodes[0].WaitForAsync("/readyz", TimeSpan.FromSeconds(60), cancellationToken);
            await RegistryTables.InstallRecorderAsync(primary.ConnectionString, cancellationToken);
            await Task.WhenAll(nodes.Skip(1).Select(n => n.StartAsync(cancellationToken)));
            await Task.WhenAll(nodes.Select(n => n.WaitForAsync("/readyz", TimeSpan.FromSeconds(60), cancellationToken)));

            using var http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(2) }) { Timeout = Timeout.InfiniteTimeSpan };
            var api = new RegistryApi(http, history, nodes);
            var random = new Random(1);
            // At once, so no lease runs out on a busy machine before the heartbeats begin.
            var registered = await Task.WhenAll(Enumerable.Range(0, Instances).Select(i =>
                api.RegisterAsync($"provider{i}", i % nodes.Count, "ha", $"10.1.0.{i}:8080", "a", Ttl, cancellationToken)));
            Assert.All(registered, op => Assert.Equal(Outcome.Acknowledged, op.Outcome));

            using var stop = new CancellationTokenSource();
            var heartbeats = Task.WhenAll(Enumerable.Range(0, Instances).Select(i => HeartbeatAsync(api, i, new Random(random.Next()), stop.Token)));
            await CaughtUpAsync(replica, cancellationToken);

            // The failover: the primary goes away, the replica is promoted at once.
            var stopped = Stopwatch.StartNew();
            var stoppedAt = DateTimeOffset.UtcNow;
            await primary.StopAsync("immediate", cancellationToken);
            await replica.PromoteAsync(cancellationToken);
            var promoted = stopped.Elapsed;

            // Each node: when its change feed proves itself again (/readyz: LISTEN plus a NOTIFY round trip), and when a write through it is acknowledged.
            var ready = await Task.WhenAll(nodes.Select(async n =>
            {
                await n.WaitForAsync("/readyz", TimeSpan.FromSeconds(30), cancellationToken);
                return stopped.Elapsed;
            }));
            var written = await Task.WhenAll(nodes.Select(async (n, i) =>
            {
                while (stopped.Elapsed < TimeSpan.FromSeconds(30))
                {
                    var op = await api.RegisterAsync("writer", i, "ha-writes", $"10.2.0.{i}:8080", "a", 60, cancellationToken);
                    if (op.Outcome == Outcome.Acknowledged)
                    {
                        return op.Completed - stoppedAt;
                    }

                    await Task.Delay(100, cancellationToken);
                }

                return TimeSpan.MaxValue;
            }));

            // Heartbeats go on past two TTLs after the failover: nobody may be evicted.
            await Task.Delay(TimeSpan.FromSeconds(2 * Ttl), cancellationToken);
            var checker = new Checker(() => replica.ConnectionString, api, history);
            await checker.NodesServeTheTableAsync(FaultCluster.ConsistencyCheckInterval * 3, cancellationToken);
            await stop.CancelAsync();
            await heartbeats;
            var rows = await RegistryTables.RowEventsAsync(replica.ConnectionString, cancellationToken);
            checker.NoEvictionWithinAcknowledgedLease(rows);
            checker.NoAcknowledgedWriteLostOrReordered(rows);
            var table = await RegistryTables.TableAsync(replica.ConnectionString, cancellationToken);

            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"primary stopped -> replica promoted: {promoted.TotalSeconds:F1} s; change feed ready again on each node after {string.Join(", ", ready.Select(r => $"{r.TotalSeconds:F1} s"))}; first acknowledged write through each node after {string.Join(", ", written.Select(w => w == TimeSpan.MaxValue ? "never" : $"{w.TotalSeconds:F1} s"))} (from the primary's stop)"));
            output.WriteLine($"heartbeats answered 503 or unanswered: {history.Ops.Count(o => o.Kind == OpKind.Heartbeat && o.Outcome == Outcome.Unknown)} of {history.Ops.Count(o => o.Kind == OpKind.Heartbeat)}");
            await File.WriteAllTextAsync(Path.Combine(logFolder, "history.txt"), history.Dump(rows), cancellationToken);

            Assert.True(checker.Violations.Count == 0, checker.Report(rows));
            Assert.All(ready, r => Assert.True(r - promoted < TimeSpan.FromSeconds(10), $"a node's change feed was ready again only {r.TotalSeconds:F1} s after the stop ({(r - promoted).TotalSeconds:F1} s after the promotion)"));
            Assert.All(written, w => Assert.True(w < TimeSpan.FromSeconds(30), "writes through a node never resumed"));
            Assert.Equal(Instances, table.GetValueOrDefault("ha")?.Count ?? 0);
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.DisposeAsync();
            }

            NpgsqlConnection.ClearAllPools();
        }
    }

    [Fact]
    public async Task NodesOnAMultiHostStringWriteAndListenOnThePrimaryWhateverTheHostOrder()
    {
        var cancellationToken = CancellationToken.None;
        await using var primary = await PostgresServer.StartNewAsync(cancellationToken);
        await using var replica = await primary.StartReplicaAsync(cancellationToken);
        // The standby first and no Target Session Attributes: the registry must still pick the primary for writes and LISTEN.
        var connectionString = new NpgsqlConnectionStringBuilder(primary.ConnectionString)
        {
            Host = $"127.0.0.1:{replica.Port},127.0.0.1:{primary.Port}",
        }.ConnectionString;
        var history = new History();
        var logFolder = Path.Combine(AppContext.BaseDirectory, "fault-runs", $"standby-first-{DateTimeOffset.UtcNow:HHmmss}");
        await using var node = new NodeProcess("node0", Registry.Benchmarks.ServerLocator.Find(null), FaultCluster.NodeEnvironment(connectionString), logFolder);
        await node.StartAsync(cancellationToken);
        await node.WaitForAsync("/readyz", TimeSpan.FromSeconds(30), cancellationToken);
        using var http = new HttpClient();
        var api = new RegistryApi(http, history, [node]);

        var op = await api.RegisterAsync("provider", 0, "ha", "10.1.0.1:8080", "a", 30, cancellationToken);

        Assert.Equal((int)HttpStatusCode.Created, op.Status);
        Assert.Single((await RegistryTables.TableAsync(primary.ConnectionString, cancellationToken))["ha"]);
        NpgsqlConnection.ClearAllPools();
    }

    private static async Task HeartbeatAsync(RegistryApi api, int i, Random random, CancellationToken stop)
    {
        try
        {
            while (!stop.IsCancellationRequested)
            {
                await Task.Delay(TimeSpan.FromSeconds(Ttl / 4.0), stop);
                var first = random.Next(api.NodeCount);
                for (var attempt = 0; attempt < api.NodeCount; attempt++)
                {
                    var op = await api.HeartbeatAsync($"provider{i}", (first + attempt) % api.NodeCount, "ha", $"10.1.0.{i}:8080", stop);
                    if (op.Outcome != Outcome.Unknown)
                    {
                        break;
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
            // Done.
        }
    }

    /// <summary>The replica has replayed the registrations (a failover manager promotes a caught-up standby).</summary>
    private static async Task CaughtUpAsync(PostgresServer replica, CancellationToken cancellationToken)
    {
        var held = 0;
        for (var i = 0; i < 300; i++)
        {
            var table = await RegistryTables.TableAsync(replica.ConnectionString, cancellationToken);
            held = table.GetValueOrDefault("ha")?.Count ?? 0;
            if (held == Instances)
            {
                return;
            }

            await Task.Delay(100, cancellationToken);
        }

        throw new TimeoutException($"The replica replayed {held} of the {Instances} registrations within 30 s.");
    }
}
