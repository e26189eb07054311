using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;
using Npgsql;
using Registry.Storage;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>A node skips EF Core at start only when the database holds every migration it knows.</summary>
public sealed class SchemaVersionTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    [Fact]
    public void TheMigrationsReadFromTheirAttributesAreTheOnesEfApplies()
    {
        using var context = Context("Host=unused");

        Assert.Equal(context.GetService<IMigrationsAssembly>().Migrations.Keys.Order(StringComparer.Ordinal), SchemaVersion.KnownMigrations());
    }

    [Fact]
    public async Task ANodeStartingOnADatabaseThatLacksTheLastMigrationAppliesIt()
    {
        var known = SchemaVersion.KnownMigrations();
        var database = await Cluster.CreateDatabaseAsync();
        await using (var context = Context(database))
        {
            await context.GetService<IMigrator>().MigrateAsync(known[^2]);
        }

        Assert.Equal(known.SkipLast(1), await AppliedAsync(database));

        await using var node = new RegistryNode(database);
        _ = node.Server; // starts the host, migrations first

        Assert.Equal(known, await AppliedAsync(database));
    }

    private static RegistryDbContext Context(string connectionString) => new(new DbContextOptionsBuilder<RegistryDbContext>()
        .UseNpgsql(connectionString, npgsql => npgsql.MigrationsAssembly(SchemaVersion.MigrationsAssembly))
        .Options);

    private static async Task<List<string>> AppliedAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("""SELECT "MigrationId" FROM "__EFMigrationsHistory" ORDER BY "MigrationId" COLLATE "C" """, connection);
        await using var reader = await command.ExecuteReaderAsync();
        var applied = new List<string>();
        while (await reader.ReadAsync())
        {
            applied.Add(reader.GetString(0));
        }

        return applied;
    }
}
