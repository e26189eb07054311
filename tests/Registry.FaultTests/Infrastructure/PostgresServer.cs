using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace Registry.FaultTests.Infrastructure;

/// <summary>
/// A private PostgreSQL server from the local binaries that a test can stop, restart, copy
/// into a streaming replica and promote. Unlike <c>LocalPostgres</c> it keeps its port across
/// restarts, so the proxies in front of it need not move. PostgreSQL refuses to run as root,
/// so under root the binaries run as the <c>postgres</c> user.
/// </summary>
public sealed class PostgresServer : IAsyncDisposable
{
    private const string User = "registry";
    private readonly string _bin;
    private readonly bool _asPostgresUser;
    private readonly bool _ownsFolder;

    private PostgresServer(string bin, string dataDirectory, int port, bool ownsFolder)
    {
        _bin = bin;
        DataDirectory = dataDirectory;
        Port = port;
        _ownsFolder = ownsFolder;
        _asPostgresUser = Environment.UserName == "root";
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
        var folder = NewFolder("primary");
        var server = new PostgresServer(FindBinaries(), folder, FreePort(), ownsFolder: true);
        await server.PrepareFolderAsync(cancellationToken);
        await server.PgAsync("initdb", ["-D", folder, "-U", User, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"], cancellationToken);
        await server.StartAsync(cancellationToken);
        return server;
    }

    /// <summary>A streaming replica of this server, made with pg_basebackup and started.</summary>
    public async Task<PostgresServer> StartReplicaAsync(CancellationToken cancellationToken)
    {
        var folder = NewFolder("replica");
        var replica = new PostgresServer(_bin, folder, FreePort(), ownsFolder: true);
        await replica.PrepareFolderAsync(cancellationToken);
        // -R writes standby.signal and primary_conninfo; -X stream copies the WAL it needs.
        await replica.PgAsync("pg_basebackup", ["-D", folder, "-h", "127.0.0.1", "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-U", User, "-R", "-X", "stream", "--no-sync"], cancellationToken);
        await replica.StartAsync(cancellationToken);
        return replica;
    }

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var settings = $"-p {Port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{DataDirectory}' -c max_connections=300"
            // fsync off survives a PostgreSQL crash (the OS keeps the pages); synchronous_commit off
            // would not: a crash would lose commits the registry had acknowledged.
            + " -c fsync=off -c full_page_writes=off -c wal_level=replica -c hot_standby=on";
        return PgAsync("pg_ctl", ["-D", DataDirectory, "-l", Path.Combine(DataDirectory, "server.log"), "-w", "-t", "60", "-o", settings, "start"], cancellationToken);
    }

    /// <summary>Stops the server: <c>fast</c> closes sessions cleanly, <c>immediate</c> is a crash.</summary>
    public Task StopAsync(string mode, CancellationToken cancellationToken) =>
        PgAsync("pg_ctl", ["-D", DataDirectory, "-m", mode, "-w", "-t", "60", "stop"], cancellationToken);

    /// <summary>Turns a standby into a primary and waits until it accepts writes.</summary>
    public Task PromoteAsync(CancellationToken cancellationToken) =>
        PgAsync("pg_ctl", ["-D", DataDirectory, "-w", "-t", "60", "promote"], cancellationToken);

    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync("immediate", CancellationToken.None);
        }
        catch (InvalidOperationException)
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
        Path.Combine(Path.GetTempPath(), $"registry-fault-{Environment.ProcessId}-{role}-{Guid.NewGuid():N}"[..48]);

    private async Task PrepareFolderAsync(CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(DataDirectory);
        if (_asPostgresUser)
        {
            await RunAsync("chown", ["-R", "postgres:postgres", DataDirectory], cancellationToken);
            await RunAsync("chmod", ["0700", DataDirectory], cancellationToken);
        }
    }

    private static string FindBinaries() =>
        (Directory.Exists("/usr/lib/postgresql") ? Directory.GetDirectories("/usr/lib/postgresql") : [])
            .Select(v => Path.Combine(v, "bin"))
            .OrderByDescending(v => int.TryParse(Path.GetFileName(Path.GetDirectoryName(v)), out var major) ? major : 0)
            .FirstOrDefault(v => File.Exists(Path.Combine(v, "pg_basebackup")) && File.Exists(Path.Combine(v, "pg_ctl")))
        ?? throw new InvalidOperationException("The fault tests need the PostgreSQL server binaries in /usr/lib/postgresql/*/bin (.ci/run installs them).");

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private Task PgAsync(string program, IReadOnlyList<string> arguments, CancellationToken cancellationToken) =>
        _asPostgresUser
            ? RunAsync("runuser", ["-u", "postgres", "--", Path.Combine(_bin, program), .. arguments], cancellationToken)
            : RunAsync(Path.Combine(_bin, program), arguments, cancellationToken);

    private static async Task RunAsync(string program, IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var error = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{Path.GetFileName(program)} {string.Join(' ', arguments)} failed ({process.ExitCode}): {(await error + await output).Trim()}");
        }
    }
}
