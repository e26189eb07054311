using Registry.Postgres;
using Registry.Storage;
using Testcontainers.PostgreSql;

namespace Registry.Tests.Infrastructure;

/// <summary>
/// A real PostgreSQL for the suite, taken in this order: the connection string in
/// <c>REGISTRY_TEST_CONNECTION_STRING</c>; a Testcontainers PostgreSQL when a Docker engine
/// answers; otherwise a private cluster from the local server binaries.
/// </summary>
public sealed class TestDatabase : IAsyncDisposable
{
    public const string EnvironmentVariable = "REGISTRY_TEST_CONNECTION_STRING";

    /// <summary>How the folders of the local clusters begin; then the test process's id.</summary>
    public const string LocalPrefix = "registry-tests-";

    private readonly IAsyncDisposable? _owned;

    private TestDatabase(string connectionString, string source, IAsyncDisposable? owned)
    {
        ConnectionString = connectionString;
        Source = source;
        _owned = owned;
    }

    public string ConnectionString { get; }

    /// <summary>Where the database came from (for the test log).</summary>
    public string Source { get; }

    public static async Task<TestDatabase> StartAsync()
    {
        var configured = Environment.GetEnvironmentVariable(EnvironmentVariable);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            // A database of this suite's own on that server: suites run in parallel, and one
            // suite's resets must not empty another's tables.
            var owned = await OwnDatabase.CreateAsync(configured);
            return new TestDatabase(owned.ConnectionString, $"{EnvironmentVariable} (database {owned.Name})", owned);
        }

        if (DockerAnswers())
        {
            var container = new PostgreSqlBuilder("postgres:16-alpine").Build();
            try
            {
                await container.StartAsync();
                return new TestDatabase(container.GetConnectionString(), "Testcontainers", container);
            }
#pragma warning disable CA1031 // A socket this user may not use, an engine that is down: the local cluster serves instead.
            catch (Exception) when (LocalPostgresInstalled())
#pragma warning restore CA1031
            {
                await container.DisposeAsync();
            }
        }

        var folder = Path.Combine(Path.GetTempPath(), $"{LocalPrefix}{Environment.ProcessId}-{Guid.NewGuid():N}"[..40]);
        LocalPostgres local;
        try
        {
            await LocalPostgres.StopAbandonedAsync(LocalPrefix, CancellationToken.None);
            local = await LocalPostgres.StartAsync(folder, null, durable: false, CancellationToken.None);
        }
        catch (LocalPostgresException e)
        {
            throw new InvalidOperationException(
                $"The tests need PostgreSQL: set {EnvironmentVariable}, run a Docker engine, or install the 'postgresql' package " +
                $"(.ci/run installs it). {e.Message}", e);
        }

        return new TestDatabase(local.ConnectionString, $"local cluster in {folder}", new DeleteAfter(local, folder));
    }

    public async ValueTask DisposeAsync()
    {
        if (_owned is not null)
        {
            await _owned.DisposeAsync();
        }
    }

    private static bool LocalPostgresInstalled()
    {
        try
        {
            PostgresBinaries.Find();
            return true;
        }
        catch (LocalPostgresException)
        {
            return false;
        }
    }

    /// <summary>Testcontainers is tried only when an engine can be reached; otherwise it would time out first.</summary>
    private static bool DockerAnswers()
    {
        var host = Environment.GetEnvironmentVariable("DOCKER_HOST");
        if (!string.IsNullOrEmpty(host))
        {
            return true;
        }

        return File.Exists("/var/run/docker.sock");
    }

    private sealed class OwnDatabase : IAsyncDisposable
    {
        private readonly string _server;

        private OwnDatabase(string server, string name, string connectionString)
        {
            _server = server;
            Name = name;
            ConnectionString = connectionString;
        }

        public string Name { get; }

        public string ConnectionString { get; }

        public static async Task<OwnDatabase> CreateAsync(string server)
        {
            var name = $"registry_test_{Guid.NewGuid():N}";
            await ExecuteAsync(server, $"CREATE DATABASE {name}");
            return new OwnDatabase(server, name, new Npgsql.NpgsqlConnectionStringBuilder(server) { Database = name }.ConnectionString);
        }

        public async ValueTask DisposeAsync()
        {
            Npgsql.NpgsqlConnection.ClearAllPools();
            await ExecuteAsync(_server, $"DROP DATABASE IF EXISTS {Name} WITH (FORCE)");
        }

        private static async Task ExecuteAsync(string server, string sql)
        {
            await using var connection = new Npgsql.NpgsqlConnection(server);
            await connection.OpenAsync();
            await using var command = new Npgsql.NpgsqlCommand(sql, connection);
            await command.ExecuteNonQueryAsync();
        }
    }

    private sealed class DeleteAfter(LocalPostgres postgres, string folder) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync()
        {
            await postgres.DisposeAsync();
            try
            {
                Directory.Delete(folder, recursive: true);
                File.Delete(folder + ".lock");
            }
            catch (IOException)
            {
                // Left for the system's temporary-folder cleanup.
            }
            catch (UnauthorizedAccessException)
            {
                // Left for the system's temporary-folder cleanup.
            }
        }
    }
}
