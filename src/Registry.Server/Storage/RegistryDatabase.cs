using Microsoft.Extensions.Options;
using Npgsql;

namespace Registry.Storage;

/// <summary>
/// The node's connections to PostgreSQL: a pooled data source for writes, loads and sweeps
/// (EF Core shares it), and the settings for the change feed's one dedicated connection.
/// </summary>
internal sealed class RegistryDatabase : IAsyncDisposable
{
    public const string ConnectionStringName = "Registry";

    public RegistryDatabase(IConfiguration configuration, IOptions<DatabaseOptions> options)
    {
        var configured = configuration.GetConnectionString(ConnectionStringName);
        if (string.IsNullOrWhiteSpace(configured))
        {
            throw new InvalidOperationException("ConnectionStrings:Registry is not set.");
        }

        var pooled = new NpgsqlConnectionStringBuilder(configured)
        {
            Timeout = options.Value.ConnectTimeoutSeconds,
            CommandTimeout = options.Value.CommandTimeoutSeconds,
            // Pooled sessions keep no state (LISTEN has its own connection): skip DISCARD ALL.
            NoResetOnClose = true,
        };
        // Writes and LISTEN need the primary: with several hosts listed (a replica among them),
        // Npgsql would otherwise take whichever answers first, and a standby refuses writes and
        // never delivers a notification. (Npgsql accepts the setting only with several hosts.)
        if (pooled.Host?.Contains(',', StringComparison.Ordinal) == true)
        {
            pooled.TargetSessionAttributes = "primary";
        }
        // The hot statements run thousands of times a second: prepared, PostgreSQL parses them
        // once per connection. It still plans each run for its arguments: a cached generic plan
        // is costed once, often on a nearly empty table, and turned key lookups into scans.
        if (!Specified(configured, "Max Auto Prepare"))
        {
            pooled.MaxAutoPrepare = 20;
        }

        if (string.IsNullOrEmpty(pooled.ApplicationName))
        {
            pooled.ApplicationName = "registry";
        }

        var setPlanMode = pooled.MaxAutoPrepare > 0 && pooled.Options?.Contains("plan_cache_mode", StringComparison.Ordinal) != true;
        var sessionOptions = pooled.Options;
        if (setPlanMode)
        {
            pooled.Options = $"{sessionOptions} -c plan_cache_mode=force_custom_plan".TrimStart();
        }

        DataSource = NpgsqlDataSource.Create(pooled);

        // A statement with no scan to choose (an upsert goes through its conflict index) has
        // one right plan whatever the table holds: planned once per connection, a 25-row
        // registration batch costs PostgreSQL about a third less.
        PlannedOnceDataSource = setPlanMode
            ? NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(pooled.ConnectionString)
            {
                Options = $"{sessionOptions} -c plan_cache_mode=force_generic_plan".TrimStart(),
            })
            : DataSource;

        // LISTEN needs its own long-lived session on the primary, watched by TCP keepalives.
        ListenerConnectionString = new NpgsqlConnectionStringBuilder(pooled.ConnectionString)
        {
            Pooling = false,
            KeepAlive = 15,
            TcpKeepAlive = true,
            ApplicationName = ChangeFeedApplicationName,
        }.ConnectionString;
    }

    /// <summary>The application_name of every node's LISTEN session (operators and tests find it by this).</summary>
    public const string ChangeFeedApplicationName = "registry-changefeed";

    /// <summary>Statements are planned for each run's arguments (key lookups stay key lookups as the table grows).</summary>
    public NpgsqlDataSource DataSource { get; }

    /// <summary>For statements with one plan whatever the table holds: planned once per connection.</summary>
    public NpgsqlDataSource PlannedOnceDataSource { get; }

    public string ListenerConnectionString { get; }

    public async ValueTask DisposeAsync()
    {
        if (PlannedOnceDataSource != DataSource)
        {
            await PlannedOnceDataSource.DisposeAsync();
        }

        await DataSource.DisposeAsync();
    }

    /// <summary>Whether the connection string sets <paramref name="keyword"/> (spaces and case aside).</summary>
    private static bool Specified(string connectionString, string keyword)
    {
        var builder = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = connectionString };
        return builder.Keys.Cast<string>().Any(k => k.Replace(" ", "", StringComparison.Ordinal).Equals(keyword.Replace(" ", "", StringComparison.Ordinal), StringComparison.OrdinalIgnoreCase));
    }
}
