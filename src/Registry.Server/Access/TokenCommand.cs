using Microsoft.EntityFrameworkCore;
using Npgsql;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Access;

/// <summary>
/// <c>Registry.Server tokens create --description D [--admin] [--register P…] [--subscribe P…] [--expires RFC3339]</c>:
/// creates a token directly in the configured database (migrating it first if it is new) without
/// starting the web host, and prints the secret once. Running nodes accept it within a second.
/// </summary>
internal static class TokenCommand
{
    public const string Name = "tokens";

    private const string Usage = "usage: tokens create --description TEXT [--admin] [--register PATTERN...] [--subscribe PATTERN...] [--expires RFC3339]";

    public static async Task<int> RunAsync(
        IConfiguration configuration, IReadOnlyList<string> args, ILoggerFactory loggers, TextWriter output, TextWriter error, CancellationToken cancellationToken)
    {
        var limits = configuration.GetSection("Registry:Auth").Get<AccessOptions>() ?? new AccessOptions();
        if (Parse(args, DateTimeOffset.UtcNow, limits, out var wrong) is not { } spec)
        {
            await error.WriteLineAsync($"tokens: {wrong}");
            await error.WriteLineAsync(Usage);
            return 2;
        }

        var connectionString = configuration.GetConnectionString(RegistryDatabase.ConnectionStringName);
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            await error.WriteLineAsync("tokens create needs the nodes' database: set ConnectionStrings__Registry (a node on its embedded database runs Open and needs no token).");
            return 1;
        }

        await using (var context = new RegistryDbContext(new DbContextOptionsBuilder<RegistryDbContext>()
            .UseNpgsql(connectionString, npgsql => npgsql.MigrationsAssembly("Registry.Migrations")).Options))
        {
            await context.Database.MigrateAsync(cancellationToken);
        }

        await using var database = NpgsqlDataSource.Create(connectionString);
        var (token, secret) = (await TokenStore.CreateAsync(database, spec, maxTokens: null, cancellationToken))!.Value;
        AuditLog.TokenCreatedOffline(loggers, token.Id, token.Admin, token.Register, token.Subscribe);
        await output.WriteLineAsync($"Created {token.Id} ({token.Description}). Its secret, shown only now:");
        await output.WriteLineAsync(secret);
        return 0;
    }

    /// <summary>The token asked for, or null with what is wrong when the arguments are not a valid <c>create</c>.</summary>
    internal static TokenSpec? Parse(IReadOnlyList<string> args, DateTimeOffset now, AccessOptions limits, out string? error)
    {
        error = null;
        if (args.Count == 0 || args[0] != "create")
        {
            error = "the only command is 'tokens create'";
            return null;
        }

        string? description = null;
        var admin = false;
        DateTimeOffset? expires = null;
        List<string> register = [], subscribe = [];
        List<string>? collecting = null;
        for (var i = 1; i < args.Count; i++)
        {
            var argument = args[i];
            // An option is never taken for a pattern: a mistyped one, or one whose value is wrong, must not end up
            // as a pattern of the token (a permanent token made where a time-limited one was asked for).
            if (!argument.StartsWith("--", StringComparison.Ordinal))
            {
                if (collecting is null || !Grant.IsPattern(argument))
                {
                    error = collecting is null
                        ? $"'{argument}' follows no option that takes it"
                        : $"'{argument}' is not an application pattern (letters, digits, '.', '_' and '-', or a prefix ending in '*')";
                    return null;
                }

                collecting.Add(argument);
                continue;
            }

            collecting = null;
            switch (argument)
            {
                case "--description" when i + 1 < args.Count && !args[i + 1].StartsWith("--", StringComparison.Ordinal):
                    description = args[++i];
                    break;
                case "--description":
                    error = "--description needs a text (an option follows it)";
                    return null;
                case "--admin":
                    admin = true;
                    break;
                case "--expires":
                    if (i + 1 >= args.Count || !Rfc3339.TryParse(args[i + 1], out var at) || at <= now)
                    {
                        error = $"--expires needs a time to come in RFC 3339, such as {now.AddDays(90):yyyy-MM-dd}T00:00:00Z";
                        return null;
                    }

                    expires = at.ToUniversalTime();
                    i++;
                    break;
                case "--register":
                    collecting = register;
                    break;
                case "--subscribe":
                    collecting = subscribe;
                    break;
                default:
                    error = $"unknown option '{argument}'";
                    return null;
            }
        }

        if (string.IsNullOrWhiteSpace(description))
        {
            error = "--description is required";
            return null;
        }

        // The API's rules: every node holds what a token names, and logs and listings show its description.
        error = TokenSpec.DescriptionProblem(description, limits) is { } wrongDescription ? $"--description {wrongDescription}"
            : TokenSpec.PatternsProblem(register, limits) is { } wrongRegister ? $"--register {wrongRegister}"
            : TokenSpec.PatternsProblem(subscribe, limits) is { } wrongSubscribe ? $"--subscribe {wrongSubscribe}"
            : null;
        if (error is not null)
        {
            return null;
        }

        return new TokenSpec(description, [.. register], [.. subscribe], admin, expires);
    }
}
