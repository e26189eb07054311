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

    private LocalPostgres(PostgresBinaries binaries, string dataDirectory, int port)
    {
        _binaries = binaries;
        DataDirectory = dataDirectory;
        Port = port;
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
        var binaries = PostgresBinaries.Find(binDirectory);
        dataDirectory = Path.GetFullPath(dataDirectory);
        Directory.CreateDirectory(dataDirectory);
        await PostgresBinaries.HandOverAsync(dataDirectory, cancellationToken);
        var postgres = new LocalPostgres(binaries, dataDirectory, PostgresBinaries.FreePort());
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
        await postgres._binaries.RunAsync("pg_ctl", ["-D", dataDirectory, "-l", Path.Combine(dataDirectory, "server.log"), "-w", "-t", "60", "-o", settings, "start"], cancellationToken);
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

    /// <summary>Stops the cluster (fast shutdown: sessions are closed, data is kept).</summary>
    public async ValueTask DisposeAsync() => await StopAsync(tolerateFailure: true, CancellationToken.None);

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
