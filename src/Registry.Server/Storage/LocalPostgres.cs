using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace Registry.Storage;

/// <summary>PostgreSQL cannot be provided: the message says what to install or configure.</summary>
public sealed class LocalPostgresException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// A private PostgreSQL cluster run from the local server binaries (Debian's
/// <c>postgresql</c> package), for when no connection string is configured and for tests on
/// machines without Docker. PostgreSQL refuses to run as root, so under root the binaries
/// run as the <c>postgres</c> user.
/// </summary>
public sealed class LocalPostgres : IAsyncDisposable
{
    private const string User = "registry";
    private readonly string _binDirectory;
    private readonly bool _asPostgresUser;

    private LocalPostgres(string binDirectory, string dataDirectory, int port, bool asPostgresUser)
    {
        _binDirectory = binDirectory;
        DataDirectory = dataDirectory;
        Port = port;
        _asPostgresUser = asPostgresUser;
        ConnectionString = new NpgsqlConnectionStringBuilder
        {
            Host = "127.0.0.1",
            Port = port,
            Username = User,
            Database = "postgres",
        }.ConnectionString;
    }

    /// <summary>The folder holding the cluster.</summary>
    public string DataDirectory { get; }

    /// <summary>The TCP port it listens on (loopback only).</summary>
    public int Port { get; }

    /// <summary>How to reach it.</summary>
    public string ConnectionString { get; }

    /// <summary>The default data folder: under the system's temporary folder, one per user.</summary>
    public static string DefaultDataDirectory => Path.Combine(Path.GetTempPath(), $"registry-postgres-{Environment.UserName}");

    /// <summary>
    /// Creates the cluster in <paramref name="dataDirectory"/> if it holds none, and starts it on
    /// a free loopback port. <paramref name="durable"/> false skips fsync (for tests).
    /// </summary>
    public static async Task<LocalPostgres> StartAsync(string dataDirectory, string? binDirectory, bool durable, CancellationToken cancellationToken)
    {
        var bin = FindBinaries(binDirectory);
        var asPostgresUser = Environment.UserName == "root";
        dataDirectory = Path.GetFullPath(dataDirectory);
        Directory.CreateDirectory(dataDirectory);
        if (asPostgresUser)
        {
            await RunAsync("chown", ["-R", "postgres:postgres", dataDirectory], cancellationToken);
            await RunAsync("chmod", ["0700", dataDirectory], cancellationToken);
        }

        var postgres = new LocalPostgres(bin, dataDirectory, FreePort(), asPostgresUser);
        if (!File.Exists(Path.Combine(dataDirectory, "PG_VERSION")))
        {
            await postgres.PgAsync("initdb", ["-D", dataDirectory, "-U", User, "--auth=trust", "--encoding=UTF8", "--locale=C", .. durable ? Array.Empty<string>() : ["--no-sync"]], cancellationToken);
        }

        // A cluster left running by a process that was killed: stop it, then start afresh.
        if (File.Exists(Path.Combine(dataDirectory, "postmaster.pid")))
        {
            await postgres.StopAsync(tolerateFailure: true, cancellationToken);
        }

        var settings = $"-p {postgres.Port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{dataDirectory}' -c max_connections=300"
            + (durable ? "" : " -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        await postgres.PgAsync("pg_ctl", ["-D", dataDirectory, "-l", Path.Combine(dataDirectory, "server.log"), "-w", "-t", "60", "-o", settings, "start"], cancellationToken);
        return postgres;
    }

    /// <summary>Stops the cluster (fast shutdown: sessions are closed, data is kept).</summary>
    public async ValueTask DisposeAsync() => await StopAsync(tolerateFailure: true, CancellationToken.None);

    private async Task StopAsync(bool tolerateFailure, CancellationToken cancellationToken)
    {
        try
        {
            await PgAsync("pg_ctl", ["-D", DataDirectory, "-m", "fast", "-w", "-t", "60", "stop"], cancellationToken);
        }
        catch (LocalPostgresException) when (tolerateFailure)
        {
            // Not running.
        }
    }

    private static string FindBinaries(string? configured)
    {
        static bool HasServer(string folder) =>
            File.Exists(Path.Combine(folder, "initdb")) && File.Exists(Path.Combine(folder, "pg_ctl"));

        if (!string.IsNullOrEmpty(configured))
        {
            return HasServer(configured)
                ? configured
                : throw new LocalPostgresException($"Registry:Database:LocalBinDirectory ({configured}) holds no initdb and pg_ctl.");
        }

        var candidates = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql")
                .Select(v => Path.Combine(v, "bin"))
                .OrderByDescending(v => int.TryParse(Path.GetFileName(Path.GetDirectoryName(v)), out var major) ? major : 0)
            : Enumerable.Empty<string>();
        var path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries);
        return candidates.Concat(path).FirstOrDefault(HasServer)
            ?? throw new LocalPostgresException(
                "No database is configured and no PostgreSQL server is installed: install the 'postgresql' package " +
                "(sudo apt-get install postgresql) or set ConnectionStrings__Registry to a PostgreSQL database.");
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private Task PgAsync(string program, IReadOnlyList<string> arguments, CancellationToken cancellationToken) =>
        _asPostgresUser
            ? RunAsync("runuser", ["-u", "postgres", "--", Path.Combine(_binDirectory, program), .. arguments], cancellationToken)
            : RunAsync(Path.Combine(_binDirectory, program), arguments, cancellationToken);

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

        using var process = new Process { StartInfo = start };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new LocalPostgresException($"Cannot run {program}: {e.Message}.", e);
        }

        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var error = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0)
        {
            var said = (await error + await output).Trim();
            throw new LocalPostgresException($"{Path.GetFileName(program)} {string.Join(' ', arguments)} failed ({process.ExitCode}): {said}");
        }
    }
}
