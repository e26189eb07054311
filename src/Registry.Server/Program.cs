using Registry;
using Registry.Access;
using Registry.Drain;
using Registry.Membership;
using Registry.Model;
using Registry.Operations;
using Registry.Registration;
using Registry.Postgres;
using Registry.Sessions;
using Registry.Subscription;

// `tokens create …` works on the database alone; its options are not host configuration.
var command = args is [TokenCommand.Name, ..];
var builder = WebApplication.CreateBuilder(command ? [] : args);
builder.AddSettingsBesideTheBinaries();
using var startupLog = LoggerFactory.Create(logging => logging.AddConsole());
var logger = startupLog.CreateLogger("Registry");
try
{
    if (command)
    {
        Environment.ExitCode = await TokenCommand.RunAsync(builder.Configuration, args[1..], startupLog, Console.Out, Console.Error, CancellationToken.None);
        return;
    }

    await using var localPostgres = await builder.EnsureDatabaseAsync(logger);
    builder.AddRegistry();
    builder.AddRegistryAccess(embeddedDatabase: localPostgres is not null);

    var app = builder.Build();
    app.UseRegistry();
    app.UseRegistryAccess();
    app.UseSingleQueryValues();
    // Every endpoint: a query parameter it binds, given twice, is a 400 rather than both values joined.
    var api = app.MapGroup("").RequireSingleQueryValues();
    api.MapRegistration();
    api.MapSessions();
    api.MapSubscription();
    api.MapDrain();
    api.MapOperations();
    app.MapMetrics();
    api.MapTokens();
    api.MapNodes();
    await app.RunAsync();
}
catch (Exception e) when (e is LocalPostgresException or Npgsql.NpgsqlException or Microsoft.Extensions.Options.OptionsValidationException or AccessConfigurationException
    || StartupFailure.IsUnreadableSetting(e))
{
    logger.LogCritical("The registry cannot start: {Reason}", StartupFailure.Explain(e));
    Environment.ExitCode = 1;
}

/// <summary>The entry point (public for WebApplicationFactory).</summary>
public partial class Program;
