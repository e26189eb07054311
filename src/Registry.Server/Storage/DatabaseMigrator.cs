using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace Registry.Storage;

/// <summary>
/// Applies the EF Core migrations before anything else starts (EF takes a database lock, so
/// nodes starting together do not race) and learns the database clock. EF Core is started
/// only when a migration is missing (<see cref="SchemaVersion"/>): a node that restarts against
/// a current schema, the usual case, is ready without building EF's model.
/// </summary>
internal sealed partial class DatabaseMigrator(
    IDbContextFactory<RegistryDbContext> contexts,
    RegistryDatabase database,
    DatabaseClock clock,
    ILogger<DatabaseMigrator> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!await SchemaVersion.IsCurrentAsync(database.DataSource, SchemaVersion.KnownMigrations(), cancellationToken))
        {
            await MigrateAsync(cancellationToken);
        }

        await using var now = database.DataSource.CreateCommand("SELECT clock_timestamp()");
        clock.Observe(new DateTimeOffset((DateTime)(await now.ExecuteScalarAsync(cancellationToken))!, TimeSpan.Zero));
    }

    private async Task MigrateAsync(CancellationToken cancellationToken)
    {
        await using var context = await contexts.CreateDbContextAsync(cancellationToken);
        var pending = (await context.Database.GetPendingMigrationsAsync(cancellationToken)).ToList();
        if (pending.Count > 0)
        {
            LogMigrating(logger, pending.Count, string.Join(", ", pending));
            await context.Database.MigrateAsync(cancellationToken);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Information, Message = "Applying {Count} migrations: {Migrations}")]
    private static partial void LogMigrating(ILogger logger, int count, string migrations);
}
