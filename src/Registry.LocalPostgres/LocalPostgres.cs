using Npgsql;

namespace Registry.Postgres;

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

    private readonly PostgresBinaries _binaries;

    /// <summary>Held open (locked) for this object's life: one process at a time runs the cluster in its folder.</summary>
    private readonly FileStream _lock;

    private LocalPostgres(PostgresBinaries binaries, string dataDirectory, int port, FileStream held)
    {
        _binaries = binaries;
        DataDirectory = dataDirectory;
        Port = port;
        _lock = held;
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
        // Without a trailing separator: readlink("link/") follows the link, and the link would pass for a folder.
        dataDirectory = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dataDirectory));
        var held = Lock(dataDirectory) ?? throw new LocalPostgresException(
            $"Another registry on this machine runs its embedded PostgreSQL in {dataDirectory} (it holds {LockFile(dataDirectory)}): give this " +
            "one a folder of its own with Registry:Database:LocalDataDirectory, or point both at one database with ConnectionStrings__Registry.");
        try
        {
            if (new DirectoryInfo(dataDirectory) is { Exists: true, LinkTarget: { } target })
            {
                // A folder in the shared temporary folder that someone else may have made: never followed elsewhere.
                throw new LocalPostgresException($"The embedded PostgreSQL's folder {dataDirectory} is a symbolic link (to {target}); give Registry:Database:LocalDataDirectory a folder of its own.");
            }

            var binaries = PostgresBinaries.Find(binDirectory, MajorVersionIn(dataDirectory));
            if (!Directory.Exists(dataDirectory) || !Directory.EnumerateFileSystemEntries(dataDirectory).Any())
            {
                // Only a folder made here, or an empty one (an operator's, a mount point), is handed over, and only the
                // folder itself: one that holds anything keeps its owner, and PostgreSQL refuses to run in it unless that
                // owner is the user it runs as (a cluster planted in /tmp by another user stays theirs, and is not run).
                Directory.CreateDirectory(dataDirectory);
                await PostgresBinaries.HandOverAsync(dataDirectory, cancellationToken, recursive: false);
            }

            var postgres = new LocalPostgres(binaries, dataDirectory, PostgresBinaries.FreePort(), held);
            try
            {
                await postgres.StartServerAsync(durable, cancellationToken);
            }
            catch
            {
                await postgres.StopAsync(tolerateFailure: true, CancellationToken.None);
                throw;
            }

            return postgres;
        }
        catch
        {
            await held.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Stops and deletes the clusters that test runs left in the temporary folder when their process died (a crash, a
    /// hang the test host killed): folders named <c>PREFIX-PID-…</c> whose process is gone and whose lock nobody holds
    /// (a run in another container that shares the folder has another process's id). <c>pg_ctl</c> detaches the server
    /// from the process that started it, so nothing else ever stops them. Only a server whose command line names the
    /// folder is stopped: a <c>postmaster.pid</c> planted there must not have another process signalled.
    /// </summary>
    public static async Task StopAbandonedAsync(string prefix, CancellationToken cancellationToken)
    {
        foreach (var folder in Directory.EnumerateDirectories(Path.GetTempPath(), prefix + "*"))
        {
            var name = Path.GetFileName(folder)[prefix.Length..];
            if (!int.TryParse(name[..Math.Max(0, name.IndexOf('-', StringComparison.Ordinal))], out var pid) || Lives(pid))
            {
                continue;
            }

            FileStream? held;
            try
            {
                held = Lock(folder);
            }
            catch (LocalPostgresException)
            {
                continue;
            }

            if (held is null)
            {
                continue; // a live run's
            }

            await using (held)
            {
                if (ServerOf(folder))
                {
                    try
                    {
                        await PostgresBinaries.Find().RunAsync("pg_ctl", ["-D", folder, "-m", "immediate", "-w", "-t", "60", "stop"], cancellationToken);
                    }
                    catch (LocalPostgresException)
                    {
                        // Gone meanwhile.
                    }
                }

                try
                {
                    Directory.Delete(folder, recursive: true);
                    File.Delete(LockFile(folder));
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Left for the system's temporary-folder cleanup.
                }
            }
        }

        static bool Lives(int pid)
        {
            try
            {
                using var process = System.Diagnostics.Process.GetProcessById(pid);
                return !process.HasExited;
            }
            catch (ArgumentException)
            {
                return false;
            }
        }

        // Whether the postmaster.pid's process is a server started on this folder (its command line says so).
        static bool ServerOf(string folder)
        {
            try
            {
                var pidFile = File.ReadLines(Path.Combine(folder, "postmaster.pid")).FirstOrDefault();
                return int.TryParse(pidFile, out var postmaster)
                    && File.ReadAllText($"/proc/{postmaster}/cmdline").Split('\0').Contains(folder, StringComparer.Ordinal);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return false;
            }
        }
    }

    private static string LockFile(string dataDirectory) => dataDirectory + ".lock";

    /// <summary>
    /// Locks <c>FOLDER.lock</c> beside the folder (initdb wants the folder itself empty) for as long as the stream is
    /// open; the kernel lets go of it when the process dies. Null when another process holds it. A second registry
    /// started on the same folder would otherwise take the first one's server for a killed run's, stop it and start
    /// its own.
    /// </summary>
    private static FileStream? Lock(string dataDirectory)
    {
        var path = LockFile(dataDirectory);
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.None };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            return new FileStream(path, options);
        }
        catch (IOException e) when (e.HResult is SharingViolation or WouldBlockLinux or WouldBlockMac)
        {
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LocalPostgresException($"Cannot lock {path} for the embedded PostgreSQL in {dataDirectory}: {e.Message}", e);
        }
    }

    // The HResult of the IOException that says another process holds the lock: Windows' ERROR_SHARING_VIOLATION, else
    // flock's EWOULDBLOCK as the errno itself (11 on Linux, 35 on macOS).
    private const int SharingViolation = unchecked((int)0x80070020);
    private const int WouldBlockLinux = 11;
    private const int WouldBlockMac = 35;

    /// <summary>The major version of the cluster in the folder (its PG_VERSION), so the binaries that made it run it; null for none.</summary>
    private static int? MajorVersionIn(string dataDirectory)
    {
        try
        {
            return int.TryParse(File.ReadAllText(Path.Combine(dataDirectory, "PG_VERSION")).Trim(), out var major) ? major : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Creates the cluster if the folder holds none, and starts it.</summary>
    private async Task StartServerAsync(bool durable, CancellationToken cancellationToken)
    {
        var passwordFile = Path.Combine(DataDirectory, PasswordFileName);
        string? password = null;
        if (!File.Exists(Path.Combine(DataDirectory, "PG_VERSION")))
        {
            password = NewPassword();
            await InitAsync(password, durable, cancellationToken);
            WriteSecret(passwordFile, password);
        }
        else if (File.Exists(passwordFile))
        {
            password = (await File.ReadAllTextAsync(passwordFile, cancellationToken)).Trim();
        }

        // A cluster left running by a process that was killed (this one holds the folder's lock): stop it, then start afresh.
        if (File.Exists(Path.Combine(DataDirectory, "postmaster.pid")))
        {
            await StopAsync(tolerateFailure: true, cancellationToken);
        }

        var settings = $"-p {Port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{DataDirectory}' -c max_connections=300"
            + (durable ? "" : " -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        await _binaries.RunAsync("pg_ctl", ["-D", DataDirectory, "-l", Path.Combine(DataDirectory, "server.log"), "-w", "-t", "60", "-o", settings, "start"], cancellationToken);
        ConnectionString = ConnectionStringWith(password);
        if (password is null)
        {
            // A cluster made by an older registry, with trust: give the role a password, then require it.
            password = NewPassword();
            await using (var connection = new NpgsqlConnection(ConnectionString))
            {
                await connection.OpenAsync(cancellationToken);
                await using var alter = new NpgsqlCommand($"ALTER ROLE {User} PASSWORD '{password}'; SELECT pg_reload_conf()", connection);
                await File.WriteAllTextAsync(Path.Combine(DataDirectory, "pg_hba.conf"), HostBasedAuthentication, cancellationToken);
                await alter.ExecuteNonQueryAsync(cancellationToken);
            }

            WriteSecret(passwordFile, password);
            ConnectionString = ConnectionStringWith(password);
        }
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
            await PostgresBinaries.HandOverAsync(folder.FullName, cancellationToken);
            await _binaries.RunAsync("initdb", ["-D", DataDirectory, "-U", User, $"--pwfile={file}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", .. durable ? Array.Empty<string>() : ["--no-sync"]], cancellationToken);
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

    /// <summary>Stops the cluster (fast shutdown: sessions are closed, data is kept), then lets go of its folder.</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync(tolerateFailure: true, CancellationToken.None);
        await _lock.DisposeAsync();
    }

    private async Task StopAsync(bool tolerateFailure, CancellationToken cancellationToken)
    {
        try
        {
            await _binaries.RunAsync("pg_ctl", ["-D", DataDirectory, "-m", "fast", "-w", "-t", "60", "stop"], cancellationToken);
        }
        catch (LocalPostgresException) when (tolerateFailure)
        {
            // Not running.
        }
    }
}
