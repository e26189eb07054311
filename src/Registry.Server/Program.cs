using Registry;
using Registry.Registration;
using Registry.Storage;
using Registry.Subscription;
using Registry.Operations;

var builder = WebApplication.CreateBuilder(args);
builder.AddSettingsBesideTheBinaries();
using var startupLog = LoggerFactory.Create(logging => logging.AddConsole());
var logger = startupLog.CreateLogger("Registry");
try
{
    await using var localPostgres = await builder.EnsureDatabaseAsync(logger);
    builder.AddRegistry();

    var app = builder.Build();
    app.UseRegistry();
    app.MapRegistration();
    app.MapSubscription();
    app.MapOperations();
    app.MapMetrics();
    await app.RunAsync();
}
catch (Exception e) when (e is LocalPostgresException or Npgsql.NpgsqlException or Microsoft.Extensions.Options.OptionsValidationException)
{
    logger.LogCritical("The registry cannot start: {Reason}", StartupFailure.Explain(e));
    Environment.ExitCode = 1;
}

/// <summary>The entry point (public for WebApplicationFactory).</summary>
public partial class Program;
