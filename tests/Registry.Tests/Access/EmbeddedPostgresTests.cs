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
    }

    private static async Task OpenAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT 1", connection);
        await command.ExecuteScalarAsync();
    }
}
