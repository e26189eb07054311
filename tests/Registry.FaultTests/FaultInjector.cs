using Npgsql;
using Registry.FaultTests.Infrastructure;

namespace Registry.FaultTests;

/// <summary>
/// The seeded random faults, one at a time: every kind at least once per run, in an order and
/// with targets and durations drawn from the seed. Each is recorded with its times.
/// </summary>
public sealed class FaultInjector(FaultCluster cluster, RegistryApi api, History history, int seed)
{
    public static readonly string[] Kinds = ["terminate-listen", "proxy-cut", "proxy-stall", "postgres-restart", "node-kill", "out-of-order"];

    private int _outOfOrder;
    private int _bursts;

    public async Task RunAsync(TimeSpan runFor, CancellationToken cancellationToken)
    {
        var random = new Random(seed ^ 0x5eed);
        var ends = DateTimeOffset.UtcNow + runFor;
        var schedule = new Queue<string>();
        var injected = new HashSet<string>(StringComparer.Ordinal);
        // Every kind at least once, however long a node takes to start again on a busy machine.
        while (DateTimeOffset.UtcNow < ends || injected.Count < Kinds.Length)
        {
            if (schedule.Count == 0)
            {
                foreach (var next in Kinds.OrderBy(_ => random.Next()))
                {
                    schedule.Enqueue(next);
                }
            }

            await Task.Delay(TimeSpan.FromSeconds(2 + 3 * random.NextDouble()), cancellationToken);
            var kind = schedule.Dequeue();
            injected.Add(kind);
            await InjectAsync(kind, random, cancellationToken);
        }
    }

    private async Task InjectAsync(string kind, Random random, CancellationToken cancellationToken)
    {
        var started = DateTimeOffset.UtcNow;
        var (target, detail) = kind switch
        {
            "terminate-listen" => await TerminateListenAsync(random, cancellationToken),
            "proxy-cut" => await CutProxyAsync(random, cancellationToken),
            "proxy-stall" => await StallProxyAsync(random, cancellationToken),
            "postgres-restart" => await RestartPostgresAsync(random, cancellationToken),
            "node-kill" => await KillNodeAsync(random, cancellationToken),
            "out-of-order" => await CommitOutOfOrderAsync(random, cancellationToken),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown fault"),
        };
        history.Faults.Enqueue(new FaultEvent(kind, target, started, DateTimeOffset.UtcNow, detail));
    }

    /// <summary>pg_terminate_backend of one node's LISTEN session (which node's is drawn by its place among them).</summary>
    private async Task<(string, string)> TerminateListenAsync(Random random, CancellationToken cancellationToken)
    {
        var pick = random.Next(FaultCluster.NodeCount);
        await using var connection = await cluster.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            """
            SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'registry-changefeed' ORDER BY pid OFFSET @pick LIMIT 1
            """, connection);
        command.Parameters.AddWithValue("pick", pick);
        var pid = await command.ExecuteScalarAsync(cancellationToken);
        return ($"listen session #{pick}", pid is null ? "no such session" : $"pid {pid}");
    }

    private async Task<(string, string)> CutProxyAsync(Random random, CancellationToken cancellationToken)
    {
        var node = random.Next(FaultCluster.NodeCount);
        var hold = TimeSpan.FromSeconds(2 + 5 * random.NextDouble());
        await cluster.Proxies[node].CutAsync();
        try
        {
            await Task.Delay(hold, cancellationToken);
        }
        finally
        {
            cluster.Proxies[node].Start();
        }

        return ($"node{node}", $"database unreachable for {hold.TotalSeconds:F1} s");
    }

    /// <summary>
    /// One node's database route goes dead (nothing refused, nothing answered: its statements
    /// hang), then is reset, as a route that comes back closes the connections it stranded.
    /// </summary>
    private async Task<(string, string)> StallProxyAsync(Random random, CancellationToken cancellationToken)
    {
        var node = random.Next(FaultCluster.NodeCount);
        var hold = TimeSpan.FromSeconds(2 + 5 * random.NextDouble());
        cluster.Proxies[node].Stall();
        try
        {
            await Task.Delay(hold, cancellationToken);
        }
        finally
        {
            await cluster.Proxies[node].CutAsync();
            cluster.Proxies[node].Start();
        }

        return ($"node{node}", $"database route dead for {hold.TotalSeconds:F1} s, then reset");
    }

    private async Task<(string, string)> RestartPostgresAsync(Random random, CancellationToken cancellationToken)
    {
        // immediate = a crash (recovery on start); fast = an orderly restart.
        var mode = random.Next(2) == 0 ? "immediate" : "fast";
        var pause = TimeSpan.FromSeconds(random.NextDouble() * 2);
        await cluster.Database.StopAsync(mode, cancellationToken);
        await Task.Delay(pause, cancellationToken);
        await cluster.Database.StartAsync(cancellationToken);
        // The suite's own idle pooled connections died with the server; the next fault or check
        // must not draw one of them.
        NpgsqlConnection.ClearAllPools();
        return ("postgres", $"stopped ({mode}), down {pause.TotalSeconds:F1} s plus start-up");
    }

    /// <summary>SIGKILL while a burst of registrations is in flight on the node, then start it again.</summary>
    private async Task<(string, string)> KillNodeAsync(Random random, CancellationToken cancellationToken)
    {
        var node = random.Next(FaultCluster.NodeCount);
        var application = $"burst{_bursts++}";
        var burst = Task.WhenAll(Enumerable.Range(0, 100).Select(i =>
            api.RegisterAsync(application, node, application, $"10.{100 + node}.{_bursts}.{i}:9000", "a", 5, cancellationToken)));
        var after = TimeSpan.FromMilliseconds(random.Next(20, 250));
        await Task.Delay(after, cancellationToken);
        await cluster.Nodes[node].KillAsync();
        await burst;
        var down = TimeSpan.FromSeconds(1 + 2 * random.NextDouble());
        await Task.Delay(down, cancellationToken);
        await cluster.Nodes[node].StartAsync(cancellationToken);
        return ($"node{node}", $"SIGKILL {after.TotalMilliseconds:F0} ms into a burst of 100 registrations of {application}; down {down.TotalSeconds:F1} s plus start-up");
    }

    /// <summary>
    /// Two transactions draw revisions in one order and commit in the other (the issue's
    /// reproduction): the later commit carries the lower revision.
    /// </summary>
    private async Task<(string, string)> CommitOutOfOrderAsync(Random random, CancellationToken cancellationToken)
    {
        var application = $"ooo{_outOfOrder++ % 4}";
        string[] addrs = [$"10.9.{_outOfOrder}.1:80", $"10.9.{_outOfOrder}.2:80"];
        foreach (var addr in addrs)
        {
            var op = await api.RegisterAsync("fault", random.Next(FaultCluster.NodeCount), application, addr, "a", 3600, cancellationToken);
            if (op.Outcome != Outcome.Acknowledged)
            {
                return (application, $"not injected: the setup registration answered {op.Status}");
            }
        }

        var hold = TimeSpan.FromMilliseconds(random.Next(200, 1500));
        await using var first = await cluster.OpenAsync(cancellationToken);
        await using var second = await cluster.OpenAsync(cancellationToken);
        await using var firstTransaction = await first.BeginTransactionAsync(cancellationToken);
        await UpdateAsync(first, application, addrs[0], $"fault.{application}.first", cancellationToken);
        await using (var secondTransaction = await second.BeginTransactionAsync(cancellationToken))
        {
            await UpdateAsync(second, application, addrs[1], $"fault.{application}.second", cancellationToken);
            await NotifyAsync(second, application, cancellationToken);
            await secondTransaction.CommitAsync(cancellationToken);
        }

        await Task.Delay(hold, cancellationToken);
        await NotifyAsync(first, application, cancellationToken);
        await firstTransaction.CommitAsync(cancellationToken);
        var converged = await ConvergedAsync(application, cancellationToken);
        return (application, $"lower revision committed {hold.TotalMilliseconds:F0} ms after the higher one; {converged}");
    }

    /// <summary>
    /// Checked at once, not only at quiescence: only this fault writes the application, and a
    /// later fault that makes nodes reload everything would hide the stale answer.
    /// </summary>
    private async Task<string> ConvergedAsync(string application, CancellationToken cancellationToken)
    {
        var began = DateTimeOffset.UtcNow;
        var deadline = began + FaultCluster.ConsistencyCheckInterval * 2 + TimeSpan.FromSeconds(2);
        while (true)
        {
            var table = (await RegistryTables.TableAsync(cluster.Database.ConnectionString, cancellationToken)).GetValueOrDefault(application) ?? [];
            var stale = new List<string>();
            for (var node = 0; node < api.NodeCount; node++)
            {
                if (await api.ServedAsync(node, application, cancellationToken) is { } served && Checker.Difference(table, served.Endpoints) is { } difference)
                {
                    stale.Add($"node{node} {difference}");
                }
            }

            if (stale.Count == 0)
            {
                return $"every node served it after {(DateTimeOffset.UtcNow - began).TotalMilliseconds:F0} ms";
            }

            if (DateTimeOffset.UtcNow > deadline)
            {
                foreach (var node in stale)
                {
                    history.Violations.Enqueue(new Violation("node-serves-table", application, null, began,
                        $"{(DateTimeOffset.UtcNow - began).TotalSeconds:F0} s after an out-of-order commit, {node}"));
                }

                return $"{stale.Count} node(s) still stale after {(DateTimeOffset.UtcNow - began).TotalSeconds:F0} s";
            }

            await Task.Delay(200, cancellationToken);
        }
    }

    private static async Task UpdateAsync(NpgsqlConnection connection, string application, string addr, string write, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(
            """
            SET LOCAL application_name = 'registry-fault';
            UPDATE instances SET meta = jsonb_build_object('zone', 'a', 'w', @write::text), revision = nextval('instance_revision')
             WHERE application = @application AND protocol = 'http' AND addr = @addr
            """, connection);
        command.Parameters.AddWithValue("write", write);
        command.Parameters.AddWithValue("application", application);
        command.Parameters.AddWithValue("addr", addr);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private static async Task NotifyAsync(NpgsqlConnection connection, string application, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand("SELECT pg_notify('registry_changes', @application)", connection);
        command.Parameters.AddWithValue("application", application);
        await command.ExecuteScalarAsync(cancellationToken);
    }
}
