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
        InvalidOperationException when IsUnreadableSetting(e) => $"the configuration is invalid: {e.Message}",
        _ => e.Message,
    };

    /// <summary>
    /// A setting the configuration binder cannot convert to its type (<c>MaxBodyBytes=abc</c>): its message names the
    /// setting and the type, and is all an operator needs (not a stack trace).
    /// </summary>
    public static bool IsUnreadableSetting(Exception e) =>
        e is InvalidOperationException && e.Message.StartsWith("Failed to convert configuration value", StringComparison.Ordinal);
}
