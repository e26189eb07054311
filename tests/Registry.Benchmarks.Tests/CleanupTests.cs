using Microsoft.EntityFrameworkCore;
using Npgsql;
using Registry.Storage;
using Registry.Tests.Infrastructure;

namespace Registry.Benchmarks.Tests;

/// <summary>The tool's clean-up against a database other sessions (nodes, their sweeper) are writing to.</summary>
public sealed class CleanupTests
{
    [Fact]
    public async Task CleanupNeitherDeadlocksNorFailsWhenAnotherSessionLocksItsRowsInAnotherOrder()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var cancellationToken = timeout.Token;
        await using var server = await TestDatabase.StartAsync();
        await using (var context = new RegistryDbContext(new DbContextOptionsBuilder<RegistryDbContext>()
            .UseNpgsql(server.ConnectionString, npgsql => npgsql.MigrationsAssembly("Registry.Migrations")).Options))
        {
            await context.Database.MigrateAsync(cancellationToken);
        }

        await using var database = await BenchDatabase.OpenAsync(server.ConnectionString, Path.GetTempPath(), durable: false, TextWriter.Null, cancellationToken);
        // Three rows, in this physical order: bench-cold-1, -2, -3.
        await database.SeedColdStartAsync(3, cancellationToken);

        // Another session (a node's write batch, the sweeper) holds the last row…
        await using var writer = new NpgsqlConnection(server.ConnectionString);
        await writer.OpenAsync(cancellationToken);
        await using var transaction = await writer.BeginTransactionAsync(cancellationToken);
        Assert.Equal(1, await ExecuteAsync(writer, "UPDATE instances SET ttl_seconds = 60 WHERE application = 'bench-cold-3'", cancellationToken));

        var cleanup = database.DeleteBenchRowsAsync(cancellationToken);

        // …until the clean-up has either blocked on it (one DELETE of everything does, holding
        // the rows before it) or deleted everything else.
        await using var observer = new NpgsqlConnection(server.ConnectionString);
        await observer.OpenAsync(cancellationToken);
        while (await ScalarAsync(observer, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'registry-benchmark-probe' AND wait_event_type = 'Lock'", cancellationToken) == 0
            && await ScalarAsync(observer, "SELECT count(*) FROM instances WHERE application LIKE 'bench-%'", cancellationToken) > 1)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(10), cancellationToken);
        }

        // Then it touches the first row: if the clean-up held it while waiting, that is a
        // deadlock, and PostgreSQL aborts the clean-up (40P01).
        await ExecuteAsync(writer, "UPDATE instances SET ttl_seconds = 61 WHERE application = 'bench-cold-1'", cancellationToken);
        await transaction.CommitAsync(cancellationToken);

        await cleanup;
        Assert.Equal(0, await ScalarAsync(observer, "SELECT count(*) FROM instances WHERE application LIKE 'bench-%'", cancellationToken));
    }

    private static async Task<int> ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        return await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private static async Task<long> ScalarAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        return (long)(await command.ExecuteScalarAsync(cancellationToken))!;
    }
}
