using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Postgres;

namespace Registry;

/// <summary>Turns a start-up failure into one sentence that says what to install or configure.</summary>
internal static class StartupFailure
{
    public static string Explain(Exception e) => e switch
    {
        LocalPostgresException local => local.Message,
        OptionsValidationException options => $"the configuration is invalid: {string.Join("; ", options.Failures)}",
        NpgsqlException database => $"cannot use the PostgreSQL database in ConnectionStrings:Registry ({database.Message}); start it or fix the connection string.",
        _ => e.Message,
    };
}
