using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Infrastructure;
using Microsoft.EntityFrameworkCore.Migrations;
using Registry.Storage;

namespace Registry.Tests;

/// <summary>The idempotent SQL script committed for DBAs must be what the migrations produce.</summary>
public sealed class MigrationScriptTests
{
    /// <summary>Set to 1 to rewrite the committed script instead of comparing with it.</summary>
    private const string UpdateVariable = "UPDATE_MIGRATION_SCRIPT";

    [Fact]
    public void TheCommittedScriptIsWhatTheMigrationsGenerate()
    {
        using var context = new RegistryDbContext(new DbContextOptionsBuilder<RegistryDbContext>()
            .UseNpgsql("Host=unused", npgsql => npgsql.MigrationsAssembly("Registry.Migrations"))
            .Options);
        var generated = context.GetService<IMigrator>()
            .GenerateScript(options: MigrationsSqlGenerationOptions.Idempotent)
            .ReplaceLineEndings("\n");
        var path = Path.Combine(ConfigurationTests.RepositoryRoot(), "migrations", "registry.sql");

        if (Environment.GetEnvironmentVariable(UpdateVariable) == "1")
        {
            File.WriteAllText(path, generated);
        }

        Assert.True(File.Exists(path), $"{path} is missing; run: {UpdateVariable}=1 dotnet test --filter {nameof(MigrationScriptTests)}");
        Assert.True(generated == File.ReadAllText(path).ReplaceLineEndings("\n"),
            $"migrations/registry.sql is out of date; run: {UpdateVariable}=1 dotnet test --filter {nameof(MigrationScriptTests)}");
    }
}
