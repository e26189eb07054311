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
/// <remarks>
/// Its role is a superuser, so nobody else on the machine may log in as it: every connection,
/// over TCP or the Unix socket (kept in the 0700 data folder), needs the random password kept
/// in <see cref="PasswordFileName"/> (mode 0600) in that folder, checked with SCRAM.
/// </remarks>
public sealed class LocalPostgres : IAsyncDisposable
{
    /// <summary>The file in the data folder that holds the role's password.</summary>
    public const string PasswordFileName = "registry.password";

    private const string User = "registry";

    /// <summary>Password (SCRAM) for every connection, local or TCP; no trust anywhere.</summary>
    private const string HostBasedAuthentication = """
        # Written by the registry: every connection needs the password in registry.password.
        local all all scram-sha-256
        host all all 127.0.0.1/32 scram-sha-256
        host all all ::1/128 scram-sha-256

        """;

    private readonly string _binDirectory;
    private readonly bool _asPostgresUser;

    private LocalPostgres(string binDirectory, string dataDirectory, int port, bool asPostgresUser)
    {
        _binDirectory = binDirectory;
        DataDirectory = dataDirectory;
        Port = port;
        _asPostgresUser = asPostgresUser;
    }

    /// <summary>The folder holding the cluster.</summary>
    public string DataDirectory { get; }

    /// <summary>The TCP port it listens on (loopback only).</summary>
    public int Port { get; }

    /// <summary>How to reach it (with the password: never log it).</summary>
    public string ConnectionString { get; private set; } = "";

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
        var passwordFile = Path.Combine(dataDirectory, PasswordFileName);
        string? password = null;
        if (!File.Exists(Path.Combine(dataDirectory, "PG_VERSION")))
        {
            password = NewPassword();
            await postgres.InitAsync(password, durable, cancellationToken);
            WriteSecret(passwordFile, password);
        }
        else if (File.Exists(passwordFile))
        {
            password = (await File.ReadAllTextAsync(passwordFile, cancellationToken)).Trim();
        }

        // A cluster left running by a process that was killed: stop it, then start afresh.
        if (File.Exists(Path.Combine(dataDirectory, "postmaster.pid")))
        {
            await postgres.StopAsync(tolerateFailure: true, cancellationToken);
        }

        var settings = $"-p {postgres.Port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{dataDirectory}' -c max_connections=300"
            + (durable ? "" : " -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        await postgres.PgAsync("pg_ctl", ["-D", dataDirectory, "-l", Path.Combine(dataDirectory, "server.log"), "-w", "-t", "60", "-o", settings, "start"], cancellationToken);
        postgres.ConnectionString = postgres.ConnectionStringWith(password);
        if (password is null)
        {
            // A cluster made by an older registry, with trust: give the role a password, then require it.
            password = NewPassword();
            await using (var connection = new NpgsqlConnection(postgres.ConnectionString))
            {
                await connection.OpenAsync(cancellationToken);
                await using var alter = new NpgsqlCommand($"ALTER ROLE {User} PASSWORD '{password}'; SELECT pg_reload_conf()", connection);
                await File.WriteAllTextAsync(Path.Combine(dataDirectory, "pg_hba.conf"), HostBasedAuthentication, cancellationToken);
                await alter.ExecuteNonQueryAsync(cancellationToken);
            }

            WriteSecret(passwordFile, password);
            postgres.ConnectionString = postgres.ConnectionStringWith(password);
        }

        return postgres;
    }

    private string ConnectionStringWith(string? password) => new NpgsqlConnectionStringBuilder
    {
        Host = "127.0.0.1",
        Port = Port,
        Username = User,
        Password = password,
        Database = "postgres",
    }.ConnectionString;

    /// <summary>
    /// initdb wants an empty folder: the password goes through a file of its own (readable by
    /// the user initdb runs as), and pg_hba.conf is written afterwards.
    /// </summary>
    private async Task InitAsync(string password, bool durable, CancellationToken cancellationToken)
    {
        var folder = Directory.CreateTempSubdirectory("registry-initdb-");
        try
        {
            var file = Path.Combine(folder.FullName, "password");
            WriteSecret(file, password);
            if (_asPostgresUser)
            {
                await RunAsync("chown", ["-R", "postgres:postgres", folder.FullName], cancellationToken);
            }

            await PgAsync("initdb", ["-D", DataDirectory, "-U", User, $"--pwfile={file}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", .. durable ? Array.Empty<string>() : ["--no-sync"]], cancellationToken);
        }
        finally
        {
            folder.Delete(recursive: true);
        }

        await File.WriteAllTextAsync(Path.Combine(DataDirectory, "pg_hba.conf"), HostBasedAuthentication, cancellationToken);
    }

    private static string NewPassword() => System.Buffers.Text.Base64Url.EncodeToString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(32));

    /// <summary>Writes a file only its owner can read (created so, never briefly wider).</summary>
    private static void WriteSecret(string path, string secret)
    {
        File.Delete(path);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        using var stream = new FileStream(path, options);
        using var writer = new StreamWriter(stream);
        writer.Write(secret);
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
