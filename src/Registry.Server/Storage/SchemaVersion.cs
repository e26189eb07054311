using System.Reflection;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;
using Npgsql;

namespace Registry.Storage;

/// <summary>
/// Whether the database already holds every migration this build knows, asked with two cheap
/// statements instead of EF Core: building EF's model, migrator and query pipeline was the
/// largest part of a node's start (3,800 of the 10,000 methods the JIT compiled before the
/// node was ready, issue 18), and a node that restarts against a current schema needs none of it.
/// </summary>
internal static class SchemaVersion
{
    /// <summary>The assembly holding the migrations (EF is told the same name).</summary>
    public const string MigrationsAssembly = "Registry.Migrations";

    /// <summary>EF Core's history table (its default name, in the connection's search path).</summary>
    private const string HistoryTable = "__EFMigrationsHistory";

    /// <summary>
    /// The migrations of <see cref="MigrationsAssembly"/>, read from their attributes as EF itself
    /// finds them (<c>[DbContext(typeof(RegistryDbContext))]</c> and <c>[Migration(id)]</c>).
    /// </summary>
    public static IReadOnlyList<string> KnownMigrations() =>
        [.. Assembly.Load(new AssemblyName(MigrationsAssembly)).GetTypes()
            .Where(type => type.IsSubclassOf(typeof(Migration))
                && type.GetCustomAttribute<DbContextAttribute>()?.ContextType == typeof(RegistryDbContext))
            .Select(type => type.GetCustomAttribute<MigrationAttribute>()?.Id)
            .OfType<string>()
            .Order(StringComparer.Ordinal)];

    /// <summary>True when every one of <paramref name="known"/> is recorded as applied.</summary>
    public static async Task<bool> IsCurrentAsync(NpgsqlDataSource dataSource, IReadOnlyList<string> known, CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using (var exists = connection.CreateCommand())
        {
            exists.CommandText = $"SELECT to_regclass('\"{HistoryTable}\"') IS NOT NULL";
            if (!(bool)(await exists.ExecuteScalarAsync(cancellationToken))!)
            {
                return false;
            }
        }

        await using var applied = connection.CreateCommand();
        // EF records a migration in the transaction that applies it: a listed one is complete.
        applied.CommandText = $"SELECT count(*) FROM \"{HistoryTable}\" WHERE \"MigrationId\" = ANY(@known)";
        applied.Parameters.Add(new NpgsqlParameter<string[]>("known", [.. known]));
        return (long)(await applied.ExecuteScalarAsync(cancellationToken))! == known.Count;
    }
}
