using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Registry.Model;
using Registry.State;
using Registry.Storage;

namespace Registry.Tests;

/// <summary>The rules that keep a node's view equal to the database's: content, not counts; the primary, not any host.</summary>
public sealed class ChangeDetectionTests
{
    [Fact]
    public void SnapshotsWithTheSameCountAndMaximumRevisionDifferWhenAnyRowDoes()
    {
        var a = new InstanceKey("app", "http", "10.0.0.1:80");
        var b = new InstanceKey("app", "http", "10.0.0.2:80");
        var loaded = new ApplicationSnapshot("app", [Row(a, 5), Row(b, 9)]);
        var committedLate = new ApplicationSnapshot("app", [Row(a, 7), Row(b, 9)]);

        Assert.False(loaded.SameContentAs(committedLate));
        Assert.NotEqual(loaded.ContentDigest, committedLate.ContentDigest);
        Assert.True(loaded.SameContentAs(new ApplicationSnapshot("app", [Row(b, 9), Row(a, 5)])));
    }

    [Fact]
    public async Task WritesAndTheChangeFeedGoOnlyToThePrimaryWhenSeveralHostsAreListed()
    {
        await using var services = Services("Host=db-a,db-b;Username=registry;Database=registry");
        await using var singleServices = Services("Host=db-a;Username=registry;Database=registry");
        var database = services.GetRequiredService<RegistryDatabase>();
        var single = singleServices.GetRequiredService<RegistryDatabase>();

        Assert.Equal("primary", new Npgsql.NpgsqlConnectionStringBuilder(database.DataSource.ConnectionString).TargetSessionAttributes);
        Assert.Equal("primary", new Npgsql.NpgsqlConnectionStringBuilder(database.ListenerDataSource.ConnectionString).TargetSessionAttributes);
        Assert.Null(new Npgsql.NpgsqlConnectionStringBuilder(single.ListenerDataSource.ConnectionString).TargetSessionAttributes);
    }

    [Fact]
    public async Task BothPoolsTakeTheirSizesFromTheOptionsUnlessTheConnectionStringStatesThem()
    {
        await using var services = Services("Host=db-a;Username=registry;Database=registry", new DatabaseOptions { MaxPoolSize = 7, MinPoolSize = 2 });
        await using var stated = Services("Host=db-a;Username=registry;Database=registry;Maximum Pool Size=9", new DatabaseOptions { MaxPoolSize = 7 });
        var database = services.GetRequiredService<RegistryDatabase>();

        foreach (var source in new[] { database.DataSource, database.PlannedOnceDataSource })
        {
            var settings = new Npgsql.NpgsqlConnectionStringBuilder(source.ConnectionString);
            Assert.Equal((7, 2), (settings.MaxPoolSize, settings.MinPoolSize));
        }

        Assert.Equal(9, new Npgsql.NpgsqlConnectionStringBuilder(stated.GetRequiredService<RegistryDatabase>().DataSource.ConnectionString).MaxPoolSize);
        Assert.NotSame(database.DataSource, database.PlannedOnceDataSource);
        Assert.Same(database.DataSource, services.GetRequiredKeyedService<Npgsql.NpgsqlDataSource>(RegistryDatabase.PerRunKey));
    }

    /// <summary>The database's services as the host registers them.</summary>
    private static ServiceProvider Services(string connectionString, DatabaseOptions? options = null) => RegistryDatabase.AddRegistryDatabase(new ServiceCollection()
            .AddLogging()
            .AddSingleton<IConfiguration>(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["ConnectionStrings:Registry"] = connectionString }).Build())
            .AddSingleton(Options.Create(options ?? new DatabaseOptions())))
        .BuildServiceProvider();

    private static Instance Row(InstanceKey key, long revision) => new(key, Meta.Empty, 30, DateTimeOffset.UnixEpoch, revision);
}
