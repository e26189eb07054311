using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.EntityFrameworkCore;
using Registry.ChangeFeed;
using Registry.Edge;
using Registry.Leases;
using Registry.Membership;
using Registry.Model;
using Registry.Operations;
using Registry.Probes;
using Registry.Registration;
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
        var options = builder.Configuration.GetSection("Registry:Database").Get<DatabaseOptions>() ?? new DatabaseOptions();
        var configured = builder.Configuration.GetConnectionString(RegistryDatabase.ConnectionStringName);
        if (!string.IsNullOrWhiteSpace(configured))
        {
            var probe = new Npgsql.NpgsqlConnectionStringBuilder(configured) { Timeout = options.ConnectTimeoutSeconds, Pooling = false };
            await using var connection = new Npgsql.NpgsqlConnection(probe.ConnectionString);
            await connection.OpenAsync();
            return null;
        }

        var dataDirectory = string.IsNullOrEmpty(options.LocalDataDirectory) ? LocalPostgres.DefaultDataDirectory : options.LocalDataDirectory;
        logger.LogInformation("No ConnectionStrings:Registry configured: starting a private PostgreSQL cluster in {DataDirectory}", dataDirectory);
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
        services.AddOptions<LimitsOptions>().BindConfiguration("Registry:Limits").ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<LeaseOptions>().BindConfiguration("Registry:Leases").ValidateDataAnnotations()
            .Validate(o => o.MinTtlSeconds <= o.DefaultTtlSeconds && o.DefaultTtlSeconds <= o.MaxTtlSeconds, "Registry:Leases needs MinTtlSeconds <= DefaultTtlSeconds <= MaxTtlSeconds.")
            .Validate(o => o.RenewalInterval > TimeSpan.Zero && o.SweepInterval > TimeSpan.Zero && o.SelfPreservationWindow > TimeSpan.Zero && o.LivenessInterval > TimeSpan.Zero, "Registry:Leases intervals must be positive.")
            .Validate(o => o.GraceGap >= 2 * o.LivenessInterval && o.GraceGap >= 2 * o.RenewalInterval, "Registry:Leases needs GraceGap of at least two LivenessIntervals and two RenewalIntervals.")
            .ValidateOnStart();
        services.AddOptions<SubscriptionOptions>().BindConfiguration("Registry:Subscriptions").ValidateDataAnnotations()
            .Validate(o => o.DefaultWaitSeconds <= o.MaxWaitSeconds, "Registry:Subscriptions needs DefaultWaitSeconds <= MaxWaitSeconds.")
            .ValidateOnStart();
        services.AddOptions<WriteOptions>().BindConfiguration("Registry:Writes").ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<ChangeFeedOptions>().BindConfiguration("Registry:ChangeFeed").ValidateDataAnnotations()
            .Validate(o => o.IdleCheckInterval > TimeSpan.Zero && o.CheckTimeout > TimeSpan.Zero && o.MaxReconnectDelay > TimeSpan.Zero && o.ConsistencyCheckInterval > TimeSpan.Zero, "Registry:ChangeFeed intervals must be positive.")
            .ValidateOnStart();
        services.AddOptions<DatabaseOptions>().BindConfiguration("Registry:Database").ValidateDataAnnotations().ValidateOnStart();

        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<RegistryDatabase>();
        services.AddPooledDbContextFactory<RegistryDbContext>((provider, options) => options.UseNpgsql(
            provider.GetRequiredService<RegistryDatabase>().DataSource,
            npgsql => npgsql.MigrationsAssembly("Registry.Migrations")));

        services.AddSingleton<RegistryMetrics>();
        services.AddRegistryMetricsExport();
        services.AddRegistryMembership();
        services.AddSingleton<RegistryState>();
        services.AddSingleton<OwnCommits>();
        services.AddSingleton<SubscriptionHub>();
        services.AddSingleton<LongPoll>();
        services.AddSingleton<ParkingLot>();
        services.AddSingleton<AnswerWriters>();
        services.AddSingleton<ReadinessProbe>();
        services.AddSingleton<RequestReader>();
        services.AddSingleton<RequestBody>();
        services.AddSingleton<DatabaseClock>();
        services.AddSingleton<LeaseGrace>();
        services.AddSingleton<SelfPreservation>();
        services.AddSingleton<SweepSchedule>();

        // Start order matters: migrate, start the loader, LISTEN and load, then take writes.
        services.AddHostedService<DatabaseMigrator>();
        services.AddSingletonHostedService<RegistryLoader>();
        services.AddSingletonHostedService<ChangeFeedListener>();
        services.AddSingletonHostedService<LeaseRenewer>();
        services.AddSingletonHostedService<LiveNodes>();
        services.AddSingletonHostedService<WriteBatcher>();
        services.AddHostedService<Sweeper>();
        services.AddRegistryProbes();

        services.ConfigureHttpJsonOptions(json => json.SerializerOptions.Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping);
        services.AddProblemDetails();
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
            // Framework rejections of what a client sent (bad framing, oversized) are 4xx, not 500.
            StatusCodeSelector = e => e is BadHttpRequestException bad ? bad.StatusCode : StatusCodes.Status500InternalServerError,
        });
        app.UseStatusCodePages();
        app.UseRateLimiter();
        // Only the document's and the UI's own paths go through Swashbuckle's middleware: an API
        // request that waits (a registration awaiting its batch, a parked poll) would otherwise
        // carry two more suspended middleware frames.
        app.UseWhen(
            http => http.Request.Path.StartsWithSegments("/openapi") || http.Request.Path.StartsWithSegments("/swagger"),
            docs => docs
                .UseSwagger(swagger => swagger.RouteTemplate = "openapi/{documentName}.json")
                .UseSwaggerUI(ui =>
                {
                    ui.SwaggerEndpoint("/openapi/v1.json", "Registry v1");
                    ui.RoutePrefix = "swagger";
                }));
        return app;
    }

    private static IServiceCollection AddSingletonHostedService<T>(this IServiceCollection services)
        where T : class, IHostedService
    {
        services.AddSingleton<T>();
        services.AddHostedService(provider => provider.GetRequiredService<T>());
        return services;
    }
}
