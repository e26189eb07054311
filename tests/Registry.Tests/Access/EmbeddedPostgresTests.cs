using Npgsql;
using Registry.Postgres;
using Registry.Storage;

namespace Registry.Tests.Access;

/// <summary>The embedded PostgreSQL hands its superuser role to nobody who lacks the password file.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
[Collection(AccessTestsDefinition.Name)]
public sealed class EmbeddedPostgresTests
{
    [Fact]
    public async Task TheEmbeddedClusterRefusesATcpConnectionWithoutTheSecretKeptInA0600File()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-embedded-{Guid.NewGuid():N}"[..36]);
        await using (var postgres = await LocalPostgres.StartAsync(folder, null, durable: false, CancellationToken.None))
        {
            var withSecret = new NpgsqlConnectionStringBuilder(postgres.ConnectionString);
            var passwordFile = Path.Combine(folder, LocalPostgres.PasswordFileName);
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(passwordFile));
            Assert.Equal(withSecret.Password, (await File.ReadAllTextAsync(passwordFile)).Trim());

            var none = new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { Password = null, Pooling = false };
            var wrong = new NpgsqlConnectionStringBuilder(postgres.ConnectionString) { Password = "guessed", Pooling = false };
            var noPassword = await Assert.ThrowsAnyAsync<NpgsqlException>(() => OpenAsync(none.ConnectionString));
            var badPassword = await Assert.ThrowsAsync<PostgresException>(() => OpenAsync(wrong.ConnectionString));

            Assert.Contains("password", noPassword.Message, StringComparison.OrdinalIgnoreCase);
            Assert.Equal(PostgresErrorCodes.InvalidPassword, badPassword.SqlState);
            await OpenAsync(postgres.ConnectionString);
        }

        Directory.Delete(folder, recursive: true);
        File.Delete(folder + ".lock");
    }

    /// <summary>
    /// Two registries started on one machine with the default folder. Before, the second took the first one's running
    /// server for a killed run's, stopped it and started its own: the first was left without a database.
    /// </summary>
    [Fact]
    public async Task ASecondStartOnTheSameFolderIsRefusedAndTheFirstKeepsItsDatabase()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-embedded-{Guid.NewGuid():N}"[..36]);
        await using (var first = await LocalPostgres.StartAsync(folder, null, durable: false, CancellationToken.None))
        {
            var refused = await Assert.ThrowsAsync<LocalPostgresException>(() => LocalPostgres.StartAsync(folder, null, durable: false, CancellationToken.None));

            Assert.Contains("Registry:Database:LocalDataDirectory", refused.Message, StringComparison.Ordinal);
            await OpenAsync(first.ConnectionString);
        }

        // Once the first has stopped, the folder is free again.
        await using (var again = await LocalPostgres.StartAsync(folder, null, durable: false, CancellationToken.None))
        {
            await OpenAsync(again.ConnectionString);
        }

        Directory.Delete(folder, recursive: true);
        File.Delete(folder + ".lock");
    }

    /// <summary>
    /// The default folder lies in the shared temporary folder, where anyone may have made it first. Before, a root
    /// registry handed whatever it found there to the postgres user and ran it: a cluster (and password) planted by
    /// another user, or, through a symbolic link, another cluster of the machine.
    /// </summary>
    [Fact]
    public async Task AFolderSomeoneElseMadeIsNeitherFollowedNorTakenOver()
    {
        var target = Directory.CreateTempSubdirectory("registry-elsewhere-").FullName;
        var link = Path.Combine(Path.GetTempPath(), $"registry-embedded-{Guid.NewGuid():N}"[..36]);
        Directory.CreateSymbolicLink(link, target);
        try
        {
            // Also when named with a trailing separator, which would follow the link when its target is read.
            foreach (var named in new[] { link, link + "/" })
            {
                var followed = await Assert.ThrowsAsync<LocalPostgresException>(() => LocalPostgres.StartAsync(named, null, durable: false, CancellationToken.None));
                Assert.Contains("symbolic link", followed.Message, StringComparison.Ordinal);
                Assert.Empty(Directory.EnumerateFileSystemEntries(target));
            }
        }
        finally
        {
            Directory.Delete(link);
            File.Delete(link + ".lock");
        }

        if (!PostgresBinaries.AsPostgresUser)
        {
            return; // Only root hands folders over.
        }

        // Made by another user (nobody) before the registry's first start, and not empty.
        await File.WriteAllTextAsync(Path.Combine(target, "PG_VERSION"), "16");
        await RunAsync("chown", "-R", "nobody", target);
        await Assert.ThrowsAsync<LocalPostgresException>(() => LocalPostgres.StartAsync(target, null, durable: false, CancellationToken.None));
        Assert.Equal("nobody", await RunAsync("stat", "-c", "%U", target));
        Directory.Delete(target, recursive: true);
        File.Delete(target + ".lock");
    }

    /// <summary>
    /// A test run whose process died (a crash, a hang the test host killed) leaves its cluster running: pg_ctl detaches
    /// it. Before, nothing ever stopped one; the next run now does. It leaves alone a cluster whose lock is held, though
    /// its folder names a process that is gone here (a run in another container sharing the temporary folder).
    /// </summary>
    [Fact]
    public async Task TheClusterOfATestRunWhoseProcessDiedIsStoppedAndDeletedByTheNext()
    {
        int gone;
        using (var exited = System.Diagnostics.Process.Start("true")!)
        {
            await exited.WaitForExitAsync();
            gone = exited.Id;
        }

        string Folder() => Path.Combine(Path.GetTempPath(), $"{Infrastructure.TestDatabase.LocalPrefix}{gone}-{Guid.NewGuid():N}"[..40]);

        // Left by a run that died: the server runs on, and nobody holds the folder's lock.
        var abandoned = Folder();
        var binaries = PostgresBinaries.Find();
        Directory.CreateDirectory(abandoned);
        await PostgresBinaries.HandOverAsync(abandoned, CancellationToken.None);
        await binaries.RunAsync("initdb", ["-D", abandoned, "-U", "registry", "--auth=reject", "--no-sync", "--locale=C", "--encoding=UTF8"], CancellationToken.None);
        var port = PostgresBinaries.FreePort();
        await binaries.RunAsync("pg_ctl", ["-D", abandoned, "-l", Path.Combine(abandoned, "server.log"), "-w", "-o", $"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{abandoned}'", "start"], CancellationToken.None);
        var other = Folder();
        await using var otherRun = await LocalPostgres.StartAsync(other, null, durable: false, CancellationToken.None);

        await LocalPostgres.StopAbandonedAsync(Infrastructure.TestDatabase.LocalPrefix, CancellationToken.None);

        Assert.False(Directory.Exists(abandoned));
        await Assert.ThrowsAnyAsync<System.Net.Sockets.SocketException>(async () =>
        {
            using var client = new System.Net.Sockets.TcpClient();
            await client.ConnectAsync(System.Net.IPAddress.Loopback, port);
        });
        await OpenAsync(otherRun.ConnectionString);
    }

    private static async Task<string> RunAsync(string program, params string[] arguments)
    {
        using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(program, arguments) { RedirectStandardOutput = true })!;
        var output = await process.StandardOutput.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.Equal(0, process.ExitCode);
        return output.Trim();
    }

    private static async Task OpenAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT 1", connection);
        await command.ExecuteScalarAsync();
    }
}
