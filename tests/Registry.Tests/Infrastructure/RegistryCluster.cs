using Npgsql;
using Respawn;

namespace Registry.Tests.Infrastructure;

/// <summary>
/// The suite's shared fixture: one database, migrated once by the first node, and two nodes
/// on it. <see cref="ResetAsync"/> empties the tables with Respawn and makes both nodes
/// reload, so each test starts from an empty registry.
/// </summary>
public sealed class RegistryCluster : IAsyncLifetime
{
    private TestDatabase? _database;
    private Respawner? _respawner;
    private RegistryNode? _nodeB;
    private readonly List<string> _databases = [];

    public TestDatabase Database => _database ?? throw new InvalidOperationException("Not started.");

    public string ConnectionString => Database.ConnectionString;

    /// <summary>The first node; most tests talk to it.</summary>
    public RegistryNode NodeA { get; private set; } = null!;

    /// <summary>A second node on the same database, started on first use.</summary>
    public RegistryNode NodeB
    {
        get
        {
            if (_nodeB is null)
            {
                _nodeB = new RegistryNode(ConnectionString);
                _ = _nodeB.Server;
            }

            return _nodeB;
        }
    }

    public async Task InitializeAsync()
    {
        _database = await TestDatabase.StartAsync();
        NodeA = new RegistryNode(ConnectionString);
        _ = NodeA.Server; // starts the host: migrates, listens, loads
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        _respawner = await Respawner.CreateAsync(connection, new RespawnerOptions
        {
            DbAdapter = DbAdapter.Postgres,
            SchemasToInclude = ["public"],
            TablesToIgnore = ["__EFMigrationsHistory"],
        });
    }

    public async Task ResetAsync()
    {
        await using (var connection = new NpgsqlConnection(ConnectionString))
        {
            await connection.OpenAsync();
            await EmptyTablesAsync(connection);
        }

        await NodeA.ReloadAsync();
        if (_nodeB is not null)
        {
            await _nodeB.ReloadAsync();
        }
    }

    /// <summary>
    /// Respawn's TRUNCATE locks table by table while the nodes' own background writes keep
    /// running. The sweeper's transaction marks its node (<c>nodes</c>) and then reads
    /// <c>instances</c> and <c>evictions</c>; a reset holding one of those and waiting for
    /// <c>nodes</c> deadlocked with it. The reset takes <c>nodes</c> first, as the sweeper does,
    /// and so waits for a running sweep instead. A grace extension (instances, then nodes) can
    /// still pick the reset as a deadlock victim: its transaction rolls back whole, so it runs again.
    /// </summary>
    private async Task EmptyTablesAsync(NpgsqlConnection connection)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await using var transaction = await connection.BeginTransactionAsync();
                await using var reset = new NpgsqlCommand($"LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE; {_respawner!.DeleteSql}", connection, transaction);
                await reset.ExecuteNonQueryAsync();
                await transaction.CommitAsync();
                return;
            }
            catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.DeadlockDetected && attempt < 5)
            {
            }
        }
    }

    /// <summary>
    /// A fresh, empty database on the same server, for tests that need nodes of their own
    /// (sweeper and outage tests must not share a database with the fixture's nodes).
    /// </summary>
    public async Task<string> CreateDatabaseAsync(string? applicationName = null)
    {
        var name = $"registry_{Guid.NewGuid():N}";
        await using (var connection = await OpenAsync())
        await using (var create = new NpgsqlCommand($"CREATE DATABASE {name}", connection))
        {
            await create.ExecuteNonQueryAsync();
        }

        _databases.Add(name);
        var builder = new NpgsqlConnectionStringBuilder(ConnectionString) { Database = name };
        if (applicationName is not null)
        {
            builder.ApplicationName = applicationName;
        }

        return builder.ConnectionString;
    }

    /// <summary>Opens a connection for assertions in SQL.</summary>
    public async Task<NpgsqlConnection> OpenAsync()
    {
        var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        return connection;
    }

    public async Task DisposeAsync()
    {
        if (_nodeB is not null)
        {
            await _nodeB.DisposeAsync();
        }

        await NodeA.DisposeAsync();
        NpgsqlConnection.ClearAllPools();
        await using (var connection = await OpenAsync())
        {
            foreach (var name in _databases)
            {
                await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS {name} WITH (FORCE)", connection);
                await drop.ExecuteNonQueryAsync();
            }
        }

        if (_database is not null)
        {
            await _database.DisposeAsync();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class RegistryTestsDefinition : ICollectionFixture<RegistryCluster>
{
    public const string Name = "registry";
}

/// <summary>Base of the integration tests: starts every test from an empty registry.</summary>
[Collection(RegistryTestsDefinition.Name)]
public abstract class RegistryTest(RegistryCluster cluster) : IAsyncLifetime
{
    protected RegistryCluster Cluster { get; } = cluster;

    protected RegistryNode Node => Cluster.NodeA;

    protected HttpClient Client { get; } = cluster.NodeA.CreateClient();

    public virtual Task InitializeAsync() => Cluster.ResetAsync();

    public virtual Task DisposeAsync()
    {
        Client.Dispose();
        return Task.CompletedTask;
    }
}
