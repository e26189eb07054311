using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.FaultTests.Infrastructure;

/// <summary>
/// Three registry node processes on one private PostgreSQL, each through its own TCP proxy,
/// with the test's instruments in the database: a trigger that records every change of an
/// <c>instances</c> row (and which statement made it), a LISTEN session of its own, and a
/// sampler of the live population.
/// </summary>
public sealed class FaultCluster : IAsyncDisposable
{
    public const int NodeCount = 3;

    /// <summary>The self-preservation settings the nodes run with (the checker needs them).</summary>
    public const double SelfPreservationShare = 0.15;
    public const int SelfPreservationMinInstances = 10;
    public static readonly TimeSpan SelfPreservationWindow = TimeSpan.FromSeconds(10);
    public static readonly TimeSpan ConsistencyCheckInterval = TimeSpan.FromSeconds(3);
    public static readonly TimeSpan LivenessInterval = TimeSpan.FromMilliseconds(500);

    private readonly History _history;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _background = [];

    private FaultCluster(PostgresServer database, History history, string logFolder)
    {
        Database = database;
        _history = history;
        LogFolder = logFolder;
    }

    public PostgresServer Database { get; }

    public string LogFolder { get; }

    public List<TcpProxy> Proxies { get; } = [];

    public List<NodeProcess> Nodes { get; } = [];

    public static async Task<FaultCluster> StartAsync(History history, string logFolder, CancellationToken cancellationToken)
    {
        var database = await PostgresServer.StartNewAsync(cancellationToken);
        var cluster = new FaultCluster(database, history, logFolder);
        try
        {
            var serverDll = Registry.Benchmarks.ServerLocator.Find(null);
            for (var i = 0; i < NodeCount; i++)
            {
                var proxy = new TcpProxy(database.ConnectionString);
                cluster.Proxies.Add(proxy);
                cluster.Nodes.Add(new NodeProcess($"node{i}", serverDll, NodeEnvironment(proxy.ConnectionString), logFolder));
            }

            // The first node migrates; the others start on the migrated schema.
            await cluster.Nodes[0].StartAsync(cancellationToken);
            await cluster.Nodes[0].WaitForAsync("/readyz", TimeSpan.FromSeconds(60), cancellationToken);
            await RegistryTables.InstallRecorderAsync(database.ConnectionString, cancellationToken);
            foreach (var node in cluster.Nodes.Skip(1))
            {
                await node.StartAsync(cancellationToken);
            }

            await cluster.WaitReadyAsync(TimeSpan.FromSeconds(60), cancellationToken);
            cluster._background.Add(cluster.ListenAsync(cluster._stop.Token));
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    /// <summary>Short TTLs, sweeps and checks so a run takes a minute, not an hour.</summary>
    public static Dictionary<string, string> NodeEnvironment(string connectionString) => new()
    {
        ["ConnectionStrings__Registry"] = connectionString,
        ["Registry__Auth__Mode"] = "Open",
        ["Registry__Leases__MinTtlSeconds"] = "1",
        ["Registry__Leases__RenewalInterval"] = "00:00:00.100",
        ["Registry__Leases__SweepInterval"] = "00:00:00.200",
        // A PostgreSQL restart (2-4 s here) is a cluster-wide gap that owes grace.
        ["Registry__Leases__LivenessInterval"] = LivenessInterval.ToString("c"),
        ["Registry__Leases__GraceGap"] = "00:00:02",
        ["Registry__Leases__SelfPreservationShare"] = SelfPreservationShare.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["Registry__Leases__SelfPreservationMinInstances"] = SelfPreservationMinInstances.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["Registry__Leases__SelfPreservationWindow"] = SelfPreservationWindow.ToString("c"),
        ["Registry__ChangeFeed__IdleCheckInterval"] = "00:00:02",
        ["Registry__ChangeFeed__CheckTimeout"] = "00:00:02",
        ["Registry__ChangeFeed__MaxReconnectDelay"] = "00:00:01",
        ["Registry__ChangeFeed__ConsistencyCheckInterval"] = ConsistencyCheckInterval.ToString("c"),
        ["Registry__Database__ConnectTimeoutSeconds"] = "2",
        ["Registry__Database__CommandTimeoutSeconds"] = "10",
        ["Registry__Subscriptions__ShutdownSpread"] = "00:00:00",
        ["Registry__Writes__RetryAfterSeconds"] = "1",
        ["Logging__LogLevel__Default"] = "Warning",
    };

    public async Task WaitReadyAsync(TimeSpan timeout, CancellationToken cancellationToken) =>
        await Task.WhenAll(Nodes.Select(n => n.WaitForAsync("/readyz", timeout, cancellationToken)));

    public async Task<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken)
    {
        var connection = new NpgsqlConnection(Database.ConnectionString);
        await connection.OpenAsync(cancellationToken);
        return connection;
    }

    private async Task ListenAsync(CancellationToken cancellationToken)
    {
        DateTimeOffset? down = null;
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await using var connection = new NpgsqlConnection(Database.ConnectionString + ";Keepalive=1");
                await connection.OpenAsync(cancellationToken);
                connection.Notification += (_, e) =>
                {
                    // First line: the application, then a space and a node's tag when it is a node's own batch.
                    var lines = e.Payload.Split('\n');
                    _history.Notices.Enqueue(new Notice(DateTimeOffset.UtcNow, lines[0].Split(' ')[0], lines.Length == 1 ? null : lines[1..]));
                };
                await using (var listen = new NpgsqlCommand("LISTEN registry_changes", connection))
                {
                    await listen.ExecuteNonQueryAsync(cancellationToken);
                }

                if (down is { } since)
                {
                    _history.ListenerGaps.Enqueue((since, DateTimeOffset.UtcNow));
                    down = null;
                }

                while (true)
                {
                    await connection.WaitAsync(cancellationToken);
                }
            }
            catch (Exception e) when (e is NpgsqlException or InvalidOperationException or System.Net.Sockets.SocketException or IOException)
            {
                down ??= DateTimeOffset.UtcNow;
                await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        foreach (var task in _background)
        {
            try
            {
                await task;
            }
            catch (OperationCanceledException)
            {
                // Stopped.
            }
        }

        foreach (var node in Nodes)
        {
            await node.DisposeAsync();
        }

        foreach (var proxy in Proxies)
        {
            await proxy.DisposeAsync();
        }

        NpgsqlConnection.ClearAllPools();
        await Database.DisposeAsync();
        _stop.Dispose();
    }
}
