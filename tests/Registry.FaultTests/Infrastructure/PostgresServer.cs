using Npgsql;
using Registry.Postgres;

namespace Registry.FaultTests.Infrastructure;

/// <summary>
/// A private PostgreSQL server from the local binaries that a test can stop, restart, copy
/// into a streaming replica and promote. Unlike <c>LocalPostgres</c> it keeps its port across
/// restarts, so the proxies in front of it need not move. The binaries are found and run as
/// <c>LocalPostgres</c> runs them (<see cref="PostgresBinaries"/>).
/// </summary>
public sealed class PostgresServer : IAsyncDisposable
{
    private const string User = "registry";
    private readonly PostgresBinaries _binaries;
    private readonly bool _ownsFolder;

    private PostgresServer(PostgresBinaries binaries, string dataDirectory, int port, bool ownsFolder)
    {
        _binaries = binaries;
        DataDirectory = dataDirectory;
        Port = port;
        _ownsFolder = ownsFolder;
    }

    public string DataDirectory { get; }

    public int Port { get; }

    public string ConnectionString => new NpgsqlConnectionStringBuilder
    {
        Host = "127.0.0.1",
        Port = Port,
        Username = User,
        Database = "postgres",
        // A test's own sessions must not wait long on a server that is down.
        Timeout = 3,
    }.ConnectionString;

    /// <summary>Creates and starts a fresh server in a new temporary folder.</summary>
    public static async Task<PostgresServer> StartNewAsync(CancellationToken cancellationToken)
    {
        await LocalPostgres.StopAbandonedAsync(FolderPrefix, cancellationToken);
        var folder = NewFolder("primary");
        var server = new PostgresServer(PostgresBinaries.Find(), folder, PostgresBinaries.FreePort(), ownsFolder: true);
        await server.PrepareFolderAsync(cancellationToken);
        await server._binaries.RunAsync("initdb", ["-D", folder, "-U", User, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"], cancellationToken);
        await server.StartAsync(cancellationToken);
        return server;
    }

    /// <summary>A streaming replica of this server, made with pg_basebackup and started.</summary>
    public async Task<PostgresServer> StartReplicaAsync(CancellationToken cancellationToken)
    {
        var folder = NewFolder("replica");
        var replica = new PostgresServer(_binaries, folder, PostgresBinaries.FreePort(), ownsFolder: true);
        await replica.PrepareFolderAsync(cancellationToken);
        // -R writes standby.signal and primary_conninfo; -X stream copies the WAL it needs.
        await replica._binaries.RunAsync("pg_basebackup", ["-D", folder, "-h", "127.0.0.1", "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-U", User, "-R", "-X", "stream", "--no-sync"], cancellationToken);
        await replica.StartAsync(cancellationToken);
        return replica;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var settings = $"-p {Port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{DataDirectory}' -c max_connections=300"
            // fsync off survives a PostgreSQL crash (the OS keeps the pages); synchronous_commit off
            // would not: a crash would lose commits the registry had acknowledged.
            + " -c fsync=off -c full_page_writes=off -c wal_level=replica -c hot_standby=on";
        return _binaries.RunAsync("pg_ctl", ["-D", DataDirectory, "-l", Path.Combine(DataDirectory, "server.log"), "-w", "-t", "60", "-o", settings, "start"], cancellationToken);
    }

    /// <summary>Stops the server: <c>fast</c> closes sessions cleanly, <c>immediate</c> is a crash.</summary>
    public Task StopAsync(string mode, CancellationToken cancellationToken) =>
        _binaries.RunAsync("pg_ctl", ["-D", DataDirectory, "-m", mode, "-w", "-t", "60", "stop"], cancellationToken);

    /// <summary>Turns a standby into a primary and waits until it accepts writes.</summary>
    public Task PromoteAsync(CancellationToken cancellationToken) =>
        _binaries.RunAsync("pg_ctl", ["-D", DataDirectory, "-w", "-t", "60", "promote"], cancellationToken);

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync("immediate", CancellationToken.None);
        }
        catch (LocalPostgresException)
        {
            // Not running.
        }

        if (_ownsFolder)
        {
            try
            {
                Directory.Delete(DataDirectory, recursive: true);
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

    private static string NewFolder(string role) =>
        Path.Combine(Path.GetTempPath(), $"{FolderPrefix}{Environment.ProcessId}-{role}-{Guid.NewGuid():N}"[..48]);

    /// <summary>How the servers' folders begin; then the test process's id.</summary>
    private const string FolderPrefix = "registry-fault-";

    private async Task PrepareFolderAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(DataDirectory);
        await PostgresBinaries.HandOverAsync(DataDirectory, cancellationToken);
    }
}
