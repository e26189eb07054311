using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.Options;
using Registry.ChangeFeed;
using Registry.Drain;
using Registry.Edge;
using Registry.Leases;
using Registry.Membership;
using Registry.Model;
using Registry.Operations;
using Registry.Postgres;
using Registry.Probes;
using Registry.Registration;
using Registry.Sessions;
using Registry.State;
using Registry.Storage;
using Registry.Subscription;
using Registry.Telemetry;

namespace Registry;

/// <summary>Wires the registry into a host.</summary>
internal static class RegistryServiceExtensions
{
    /// <summary>
    /// Makes sure there is a database before the host is built: when no connection string is
    /// configured, starts a private PostgreSQL cluster from the local server binaries (the
    /// caller disposes it, stopping the cluster, after the host has stopped); otherwise proves
    /// the configured one answers, so a wrong one fails in one sentence rather than a stack trace.
    /// </summary>
    public static async Task<LocalPostgres?> EnsureDatabaseAsync(this WebApplicationBuilder builder, ILogger logger)
    {
        var options = builder.Configuration.GetSection(RegistryOptions.Section(nameof(RegistryOptions.Database))).Get<DatabaseOptions>() ?? new DatabaseOptions();
        var configured = builder.Configuration.GetConnectionString(RegistryDatabase.ConnectionStringName);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            var probe = new Npgsql.NpgsqlConnectionStringBuilder(configured) { Timeout = options.ConnectTimeoutSeconds, Pooling = false };
            await using var probing = RegistryDatabase.Builder(probe.ConnectionString).Build();
            await using var connection = await probing.OpenConnectionAsync();
            return null;
        }

        var dataDirectory = string.IsNullOrEmpty(options.LocalDataDirectory) ? LocalPostgres.DefaultDataDirectory : options.LocalDataDirectory;
        logger.LogInformation(
            "No ConnectionStrings:Registry is configured, so the registry starts its own private PostgreSQL cluster in {DataDirectory} (set ConnectionStrings:Registry to use a database of yours instead)",
            dataDirectory);
        var postgres = await LocalPostgres.StartAsync(dataDirectory, options.LocalBinDirectory, durable: true, CancellationToken.None);
        logger.LogInformation("Private PostgreSQL listening on 127.0.0.1:{Port} (data in {DataDirectory}); it stops with the registry", postgres.Port, dataDirectory);
        builder.Configuration[$"ConnectionStrings:{RegistryDatabase.ConnectionStringName}"] = postgres.ConnectionString;
        return postgres;
    }

    /// <summary>
    /// Reads appsettings.json from beside the binaries when the process was started from
    /// another folder (<c>dotnet path/to/Registry.Server.dll</c>), where the content root holds
    /// none; otherwise such a node would run without its settings (and, for one, log every
    /// request). It goes first, so everything else configured still overrides it.
    /// </summary>
    public static WebApplicationBuilder AddSettingsBesideTheBinaries(this WebApplicationBuilder builder)
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "appsettings.json");
        if (!File.Exists(Path.Combine(builder.Environment.ContentRootPath, "appsettings.json")) && File.Exists(beside))
        {
            builder.Configuration.Sources.Insert(0, new Microsoft.Extensions.Configuration.Json.JsonConfigurationSource
            {
                Path = "appsettings.json",
                Optional = true,
                FileProvider = new Microsoft.Extensions.FileProviders.PhysicalFileProvider(AppContext.BaseDirectory),
            });
        }

        return builder;
    }

    public static WebApplicationBuilder AddRegistry(this WebApplicationBuilder builder)
    {
        var services = builder.Services;
        services.AddRegistryOptions<DatabaseOptions, DatabaseOptionsValidator>(nameof(RegistryOptions.Database));
        services.AddRegistryOptions<LimitsOptions>(nameof(RegistryOptions.Limits));
        services.AddRegistryOptions<LeaseOptions, LeaseOptionsValidator>(nameof(RegistryOptions.Leases));
        services.AddRegistryOptions<SubscriptionOptions, SubscriptionOptionsValidator>(nameof(RegistryOptions.Subscriptions));
        services.AddRegistryOptions<WriteOptions>(nameof(RegistryOptions.Writes));
        services.AddRegistryOptions<ChangeFeedOptions, ChangeFeedOptionsValidator>(nameof(RegistryOptions.ChangeFeed));
        services.AddRegistryOptions<RateLimitOptions>(nameof(RegistryOptions.RateLimit));

        services.AddSingleton(TimeProvider.System);
        RegistryDatabase.AddRegistryDatabase(services);
        services.AddPooledDbContextFactory<RegistryDbContext>((provider, options) => options.UseNpgsql(
            provider.GetRequiredService<RegistryDatabase>().DataSource,
            npgsql => npgsql.MigrationsAssembly(SchemaVersion.MigrationsAssembly)));

        services.AddSingleton<RegistryMetrics>();
        services.AddRegistryMetricsExport();
        services.AddRegistryMembership();
        services.AddSingleton<RegistryState>();
        services.AddSingleton<OwnCommits>();
        services.AddSingleton<SubscriptionHub>();
        services.AddSingleton<LongPoll>();
        services.AddSingleton<ParkingLot>();
        services.AddSingleton<AnswerWriters>();
        services.AddRegistryReadiness();
        services.AddSingleton<RequestReader>();
        services.AddSingleton<RequestBody>();
        services.AddSingleton<DatabaseClock>();
        services.AddSingleton<LeaseGrace>();
        services.AddSingleton<SelfPreservation>();
        services.AddSingleton<SweepSchedule>();
        services.AddRegistryBackgroundServices();
        // After the background services: the drain messenger answers other nodes' questions about
        // this node's parked consumers, who exist only once it serves.
        services.AddRegistryDrain();
        services.AddRegistrySessions();
        services.AddRegistryProbes();

        services.ConfigureHttpJsonOptions(json => json.SerializerOptions.Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping);
        // For a request whose Accept names no JSON type, which the framework's writer declines.
        services.AddSingleton<IProblemDetailsWriter, ProblemWriterForAnyAccept>();
        services.AddProblemDetails();
        services.AddExceptionHandler<DatabaseUnavailableHandler>();
        services.AddRegistryRateLimiting();
        services.AddRegistryNetwork();
        // Kestrel's limits (connections, header sizes and timeouts, minimum body rate) from the
        // "Kestrel:Limits" section; appsettings.json sets and appsettings.example.json explains them.
        services.Configure<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions>(builder.Configuration.GetSection("Kestrel"));
        services.AddEndpointsApiExplorer();
        services.AddSwaggerGen(swagger => swagger.IncludeXmlComments(typeof(RegistryServiceExtensions).Assembly));
        services.AddRegistryOpenApiDocumentation();
        return builder;
    }

    public static WebApplication UseRegistry(this WebApplication app)
    {
        // First: everything after it (limits, rate limiting, logs) sees the real client.
        app.UseForwardedHeaders();
        app.UseExceptionHandler(new ExceptionHandlerOptions
        {
            // Framework rejections of what a client sent (bad framing, oversized) are 4xx, not 500;
            // an unreachable database is 503 (DatabaseUnavailableHandler adds Retry-After).
            StatusCodeSelector = e => e switch
            {
                BadHttpRequestException bad => bad.StatusCode,
                System.Data.Common.DbException => StatusCodes.Status503ServiceUnavailable,
                _ => StatusCodes.Status500InternalServerError,
            },
        });
        app.UseStatusCodePages();
        // Only the UI's own paths go through Swashbuckle's middleware: an API request that waits
        // (a registration awaiting its batch, a parked poll) would otherwise carry one more
        // suspended middleware frame. The document it shows is an endpoint (OperationsApi).
        app.UseWhen(
            http => http.Request.Path.StartsWithSegments("/swagger"),
            docs => docs.UseSwaggerUI(ui =>
            {
                ui.SwaggerEndpoint("/openapi/v1.json", "Registry v1");
                ui.RoutePrefix = "swagger";
            }));
        return app;
    }

    /// <summary>
    /// The background services, in the order they must start. The host starts hosted services
    /// one after another in registration order (stated below, not left to the defaults) and
    /// stops them in reverse, so this list is the start order:
    /// the schema exists before anything reads it; the loader runs before the change feed hands
    /// it work; the feed LISTENs and then loads the whole registry, so nothing falls between;
    /// the renewer marks the node alive (settling any grace the cluster owes) and the live-node
    /// list is read before writes are taken (probe ownership needs it); the sweeper starts last, on a loaded registry with the grace settled.
    /// </summary>
    private static IServiceCollection AddRegistryBackgroundServices(this IServiceCollection services)
    {
        services.Configure<HostOptions>(host =>
        {
            host.ServicesStartConcurrently = false;
            host.ServicesStopConcurrently = false;
        });
        services.AddHostedService<SubscriptionWarmUp>();
        services.AddHostedService<DatabaseMigrator>();
        services.AddSingletonHostedService<RegistryLoader>();
        services.AddSingletonHostedService<ChangeFeedListener>();
        services.AddSingletonHostedService<LeaseRenewer>();
        services.AddSingletonHostedService<LiveNodes>();
        services.AddSingleton<IChangeFeedChannel>(provider => provider.GetRequiredService<LiveNodes>());
        services.AddSingletonHostedService<WriteBatcher>();
        services.AddHostedService<Sweeper>();
        return services;
    }

    /// <summary>Binds the section named by a <see cref="RegistryOptions"/> property, validated at start.</summary>
    private static OptionsBuilder<TOptions> AddRegistryOptions<TOptions>(this IServiceCollection services, string property)
        where TOptions : class =>
        services.AddOptions<TOptions>().BindConfiguration(RegistryOptions.Section(property)).ValidateDataAnnotations().ValidateOnStart();

    /// <summary>As above, with the rules that span fields.</summary>
    private static OptionsBuilder<TOptions> AddRegistryOptions<TOptions, TValidator>(this IServiceCollection services, string property)
        where TOptions : class
        where TValidator : class, IValidateOptions<TOptions>
    {
        services.AddSingleton<IValidateOptions<TOptions>, TValidator>();
        return services.AddRegistryOptions<TOptions>(property);
    }

    private static IServiceCollection AddSingletonHostedService<T>(this IServiceCollection services)
        where T : class, IHostedService
    {
        services.AddSingleton<T>();
        services.AddHostedService(provider => provider.GetRequiredService<T>());
        return services;
    }
}
