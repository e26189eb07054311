using Microsoft.Extensions.Configuration;
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
        await using var database = Database("Host=db-a,db-b;Username=registry;Database=registry");
        await using var single = Database("Host=db-a;Username=registry;Database=registry");

        Assert.Equal("primary", new Npgsql.NpgsqlConnectionStringBuilder(database.DataSource.ConnectionString).TargetSessionAttributes);
        Assert.Equal("primary", new Npgsql.NpgsqlConnectionStringBuilder(database.ListenerConnectionString).TargetSessionAttributes);
        Assert.Null(new Npgsql.NpgsqlConnectionStringBuilder(single.ListenerConnectionString).TargetSessionAttributes);
    }

    private static RegistryDatabase Database(string connectionString) => new(
        new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["ConnectionStrings:Registry"] = connectionString }).Build(),
        Options.Create(new DatabaseOptions()));

    private static Instance Row(InstanceKey key, long revision) => new(key, Meta.Empty, 30, DateTimeOffset.UnixEpoch, revision);
}
