using Microsoft.Extensions.Options;
using Npgsql;

namespace Registry.Storage;

/// <summary>
/// The node's connections to PostgreSQL: two pooled data sources and the change feed's unpooled
/// one, built here and owned by the container (registered under <see cref="PerRunKey"/>,
/// <see cref="PlannedOnceKey"/> and <see cref="ListenerKey"/>, logging through the host's logger factory).
/// </summary>
internal sealed class RegistryDatabase(
    [FromKeyedServices(RegistryDatabase.PerRunKey)] NpgsqlDataSource dataSource,
    [FromKeyedServices(RegistryDatabase.PlannedOnceKey)] NpgsqlDataSource plannedOnceDataSource,
    [FromKeyedServices(RegistryDatabase.ListenerKey)] NpgsqlDataSource listenerDataSource)
{
    public const string ConnectionStringName = "Registry";

    /// <summary>The service key of <see cref="DataSource"/>.</summary>
    public const string PerRunKey = "registry";

    /// <summary>The service key of <see cref="PlannedOnceDataSource"/>.</summary>
    public const string PlannedOnceKey = "registry-planned-once";

    /// <summary>The service key of <see cref="ListenerDataSource"/>.</summary>
    public const string ListenerKey = "registry-listener";

    /// <summary>The application_name of every node's LISTEN session (operators and tests find it by this).</summary>
    public const string ChangeFeedApplicationName = "registry-changefeed";

    /// <summary>Statements are planned for each run's arguments (key lookups stay key lookups as the table grows).</summary>
    public NpgsqlDataSource DataSource { get; } = dataSource;

    /// <summary>For statements with one plan whatever the table holds: planned once per connection.</summary>
    public NpgsqlDataSource PlannedOnceDataSource { get; } = plannedOnceDataSource;

    /// <summary>LISTEN's one long-lived session: unpooled, on the primary, watched by TCP keepalives.</summary>
    public NpgsqlDataSource ListenerDataSource { get; } = listenerDataSource;

    /// <summary>Registers the three data sources (the container owns and disposes them) and this.</summary>
    public static IServiceCollection AddRegistryDatabase(IServiceCollection services)
    {
        services.AddKeyedSingleton(PerRunKey, (provider, key) => Build(provider, (string)key!));
        services.AddKeyedSingleton(PlannedOnceKey, (provider, key) => Build(provider, (string)key!));
        services.AddKeyedSingleton(ListenerKey, (provider, key) => Build(provider, (string)key!));
        return services.AddSingleton<RegistryDatabase>();
    }

    /// <summary>Builds the data source registered under <paramref name="key"/>.</summary>
    private static NpgsqlDataSource Build(IServiceProvider services, string key)
    {
        var configuration = services.GetRequiredService<IConfiguration>();
        var options = services.GetRequiredService<IOptions<DatabaseOptions>>().Value;
        string? sessionOptions = null;
        var connection = key == ListenerKey ? Listener(configuration, options) : Pooled(configuration, options, out sessionOptions);
        // A statement with no scan to choose (an upsert goes through its conflict index) has
        // one right plan whatever the table holds: planned once per connection, a 25-row
        // registration batch costs PostgreSQL about a third less.
        if (key == PlannedOnceKey && sessionOptions is not null)
        {
            connection.Options = $"{sessionOptions} -c plan_cache_mode=force_generic_plan".TrimStart();
        }

        // Unnamed: the pool is then named by its Application Name, as metrics and tests know it.
        var builder = Builder(connection.ConnectionString);
        builder.UseLoggerFactory(services.GetRequiredService<ILoggerFactory>());
        return builder.Build();
    }

    /// <summary>
    /// A data source builder for the registry's database. The registry reads and writes only
    /// PostgreSQL's built-in types, which Npgsql knows without asking: loading the catalog's
    /// types took each data source three statements and a round trip each before its first one.
    /// </summary>
    public static NpgsqlDataSourceBuilder Builder(string connectionString)
    {
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        builder.ConfigureTypeLoading(types => types.EnableTypeLoading(false));
        return builder;
    }

    private static NpgsqlConnectionStringBuilder Listener(IConfiguration configuration, DatabaseOptions options) =>
        new(Pooled(configuration, options, out _).ConnectionString)
        {
            Pooling = false,
            KeepAlive = 15,
            TcpKeepAlive = true,
            ApplicationName = ChangeFeedApplicationName,
        };

    /// <summary>
    /// The pooled sessions' settings from the configured connection string and the options.
    /// <paramref name="sessionOptions"/> is the configured session options when the plan mode
    /// was set here (null when the connection string chose its own).
    /// </summary>
    private static NpgsqlConnectionStringBuilder Pooled(IConfiguration configuration, DatabaseOptions options, out string? sessionOptions)
    {
        var configured = configuration.GetConnectionString(ConnectionStringName);
        if (string.IsNullOrWhiteSpace(configured))
        {
            throw new InvalidOperationException("ConnectionStrings:Registry is not set.");
        }

        var pooled = new NpgsqlConnectionStringBuilder(configured)
        {
            Timeout = options.ConnectTimeoutSeconds,
            CommandTimeout = options.CommandTimeoutSeconds,
            // Pooled sessions keep no state (LISTEN has its own connection): skip DISCARD ALL.
            NoResetOnClose = true,
        };
        // Explicit pool sizes; a connection string that states its own keeps them.
        if (!Specified(configured, "Maximum Pool Size") && !Specified(configured, "Max Pool Size"))
        {
            pooled.MaxPoolSize = options.MaxPoolSize;
        }

        if (!Specified(configured, "Minimum Pool Size") && !Specified(configured, "Min Pool Size"))
        {
            pooled.MinPoolSize = options.MinPoolSize;
        }

        // Writes and LISTEN need the primary: with several hosts listed (a replica among them),
        // Npgsql would otherwise take whichever answers first, and a standby refuses writes and
        // never delivers a notification. (Npgsql accepts the setting only with several hosts.)
        if (pooled.Host?.Contains(',', StringComparison.Ordinal) == true)
        {
            pooled.TargetSessionAttributes = "primary";
            // A host found to be a standby is skipped for this long: Npgsql's 10 s default made
            // a replica promoted a moment later unusable for 10 s (the fault suite's failover).
            if (!Specified(configured, "Host Recheck Seconds"))
            {
                pooled.HostRecheckSeconds = 1;
            }
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

        if (options.IdleInTransactionTimeoutSeconds > 0 && pooled.Options?.Contains("idle_in_transaction_session_timeout", StringComparison.OrdinalIgnoreCase) != true)
        {
            pooled.Options = $"{pooled.Options} -c idle_in_transaction_session_timeout={options.IdleInTransactionTimeoutSeconds * 1000}".TrimStart();
        }

        sessionOptions = null;
        if (pooled.MaxAutoPrepare > 0 && pooled.Options?.Contains("plan_cache_mode", StringComparison.Ordinal) != true)
        {
            sessionOptions = pooled.Options ?? "";
            pooled.Options = $"{sessionOptions} -c plan_cache_mode=force_custom_plan".TrimStart();
        }

        return pooled;
    }

    /// <summary>Whether the connection string sets <paramref name="keyword"/> (spaces and case aside).</summary>
    private static bool Specified(string connectionString, string keyword)
    {
        var builder = new System.Data.Common.DbConnectionStringBuilder { ConnectionString = connectionString };
        return builder.Keys.Cast<string>().Any(k => k.Replace(" ", "", StringComparison.Ordinal).Equals(keyword.Replace(" ", "", StringComparison.Ordinal), StringComparison.OrdinalIgnoreCase));
    }
}
