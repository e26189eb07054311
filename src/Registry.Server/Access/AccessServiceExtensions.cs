using System.Net;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.AspNetCore.Authorization;
using Microsoft.Extensions.Options;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Access;

/// <summary>
/// How the node authenticates, why, whether it listens only on loopback, and whether it is Open only because nothing
/// was configured, for clients on its own machine alone (what guards an Open node; see <see cref="OpenNodeGuard"/>).
/// </summary>
internal sealed record AccessState(AccessMode Mode, string Reason, bool LoopbackOnly = false, bool ForThisMachineOnly = false);

/// <summary>A node that must authenticate could authenticate nobody; the message says how to fix it.</summary>
public sealed class AccessConfigurationException(string message) : Exception(message);

/// <summary>Wires authentication (registry tokens, optional JWT) and authorization by application.</summary>
internal static class AccessServiceExtensions
{
    /// <summary>The default scheme: picks the registry-token or the JWT scheme by the token's shape.</summary>
    public const string BearerScheme = "Bearer";

    public static WebApplicationBuilder AddRegistryAccess(this WebApplicationBuilder builder, bool embeddedDatabase)
    {
        var services = builder.Services;
        services.AddOptions<AccessOptions>().BindConfiguration("Registry:Auth").ValidateDataAnnotations()
            .Validate(o => o.LastUsedFlushInterval > TimeSpan.Zero, "Registry:Auth:LastUsedFlushInterval must be positive.")
            .Validate(o => o.ForgetExpiredAfter >= TimeSpan.Zero, "Registry:Auth:ForgetExpiredAfter must not be negative.")
            .Validate(o => o.BootstrapToken is null || (o.BootstrapToken.Length >= 32 && !o.BootstrapToken.Contains('.', StringComparison.Ordinal) && !o.BootstrapToken.Any(char.IsWhiteSpace)),
                "Registry:Auth:BootstrapToken must be at least 32 characters without dots or spaces (e.g. openssl rand -base64 32).")
            .Validate(o => !o.Jwt.Enabled || !string.IsNullOrWhiteSpace(o.Jwt.Audience), "Registry:Auth:Jwt:Audience is required with Registry:Auth:Jwt:Issuer.")
            .Validate(o => !o.Jwt.Enabled || string.IsNullOrWhiteSpace(o.Jwt.JwksUrl) != string.IsNullOrWhiteSpace(o.Jwt.JwksFile),
                "Registry:Auth:Jwt needs exactly one of JwksUrl and JwksFile with Issuer.")
            .Validate(o => !o.Jwt.Enabled || string.IsNullOrWhiteSpace(o.Jwt.JwksUrl) || o.Jwt.JwksUrl.StartsWith("https://", StringComparison.OrdinalIgnoreCase),
                "Registry:Auth:Jwt:JwksUrl must be an https URL.")
            // The JWT library refuses these only when the first JWT comes, which would answer every JWT 500.
            .Validate(o => !o.Jwt.Enabled || o.Jwt.JwksRefreshInterval >= TimeSpan.FromMinutes(5), "Registry:Auth:Jwt:JwksRefreshInterval must be at least 5 minutes (the least the JWT library takes).")
            .Validate(o => !o.Jwt.Enabled || (o.Jwt.ClockSkew >= TimeSpan.Zero && o.Jwt.ClockSkew <= TimeSpan.FromHours(1)), "Registry:Auth:Jwt:ClockSkew must be between 0 and 1 hour.")
            .ValidateOnStart();

        services.AddSingleton(DecideMode(builder.Configuration, embeddedDatabase));
        services.AddSingleton<TokenCache>();
        services.AddSingleton<IChangeFeedChannel>(provider => provider.GetRequiredService<TokenCache>());
        services.AddHostedService(provider => provider.GetRequiredService<TokenCache>());
        services.AddSingleton<FailedAuthentications>();
        services.AddSingleton<GrantPrincipals>();
        services.AddSingleton<ApplicationAccess>();
        services.AddSingleton<AuditLog>();
        services.AddSingleton<IConfigureOptions<JwtBearerOptions>, JwtCredentials>();
        // After the change feed has loaded the tokens: refuse to start when nobody could authenticate.
        services.AddHostedService<AccessStartup>();

        // Without JWTs every bearer token is a registry token: authenticate with that scheme
        // directly rather than through the selector (one handler a request instead of two).
        var jwt = !string.IsNullOrWhiteSpace(builder.Configuration["Registry:Auth:Jwt:Issuer"]);
        services.AddAuthentication(jwt ? BearerScheme : RegistryTokenHandler.SchemeName)
            .AddPolicyScheme(BearerScheme, "Registry token or JWT", policy =>
            {
                policy.ForwardDefaultSelector = http =>
                    Bearer.Token(http.Request.Headers.Authorization) is { } token && Bearer.LooksLikeJwt(token)
                        && http.RequestServices.GetRequiredService<IOptions<AccessOptions>>().Value.Jwt.Enabled
                        ? JwtCredentials.SchemeName
                        : RegistryTokenHandler.SchemeName;
                // One place answers every refusal, with a problem document.
                policy.ForwardChallenge = RegistryTokenHandler.SchemeName;
                policy.ForwardForbid = RegistryTokenHandler.SchemeName;
            })
            .AddScheme<AuthenticationSchemeOptions, RegistryTokenHandler>(RegistryTokenHandler.SchemeName, null)
            .AddJwtBearer(JwtCredentials.SchemeName);

        services.AddSingleton<IAuthorizationHandler, AdminHandler>();
        services.AddSingleton<IAuthorizationHandler, MetricsHandler>();
        services.AddAuthorizationBuilder()
            .AddPolicy(AccessPolicies.Caller, policy => policy.RequireAuthenticatedUser())
            .AddPolicy(AccessPolicies.Admin, policy => policy.RequireAuthenticatedUser().AddRequirements(new AdminRequirement()))
            .AddPolicy(AccessPolicies.Metrics, policy => policy.AddRequirements(new MetricsRequirement()));
        return builder;
    }

    public static WebApplication UseRegistryAccess(this WebApplication app)
    {
        var access = app.Services.GetRequiredService<AccessState>();
        if (access.Mode == AccessMode.Open)
        {
            app.Use((http, next) => OpenNodeGuard.Refusal(http.Request, access) is { } refused ? refused.ExecuteAsync(http) : next(http));
        }

        app.UseAuthentication();
        // After authentication, so a request is limited per credential when it has one (see
        // PerClientRateLimitPolicy); before authorization and the endpoints, so a flood costs
        // a token check and no more.
        app.UseRateLimiter();
        app.UseAuthorization();
        return app;
    }

    /// <summary>
    /// Required unless configured otherwise, except for the one-command start: a node on its own
    /// embedded PostgreSQL that only loopback clients can reach.
    /// </summary>
    internal static AccessState DecideMode(IConfiguration configuration, bool embeddedDatabase)
    {
        var configured = configuration["Registry:Auth:Mode"];
        if (!string.IsNullOrEmpty(configured))
        {
            return Enum.TryParse<AccessMode>(configured, ignoreCase: true, out var mode) && Enum.IsDefined(mode)
                ? new AccessState(mode, "Registry:Auth:Mode says so", ListensOnlyOnLoopback(configuration))
                : throw new AccessConfigurationException($"Registry:Auth:Mode is '{configured}'; it must be Required or Open.");
        }

        return embeddedDatabase && ListensOnlyOnLoopback(configuration)
            ? new AccessState(AccessMode.Open, "this node runs its own embedded PostgreSQL and listens only on loopback", LoopbackOnly: true, ForThisMachineOnly: true)
            : new AccessState(AccessMode.Required, "the default");
    }

    /// <summary>Whether every address Kestrel is configured to listen on is a loopback one.</summary>
    internal static bool ListensOnlyOnLoopback(IConfiguration configuration)
    {
        var endpoints = configuration.GetSection("Kestrel:Endpoints").GetChildren().Select(e => e["Url"]).OfType<string>().ToList();
        var urls = endpoints.Count > 0
            ? endpoints
            : (configuration["urls"] ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        if (configuration["http_ports"] is { Length: > 0 } || configuration["https_ports"] is { Length: > 0 })
        {
            return false; // ports alone bind every interface
        }

        // Kestrel's default without any URL is http://localhost:5000.
        return urls.All(url =>
        {
            var host = url.Split("://", 2) is [_, var rest] ? rest : url;
            host = host.Split('/', 2)[0];
            host = host.StartsWith('[') ? host[..(host.IndexOf(']', StringComparison.Ordinal) + 1)] : host.Split(':')[0];
            return host.Equals("localhost", StringComparison.OrdinalIgnoreCase)
                || (IPAddress.TryParse(host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address));
        });
    }
}

/// <summary>Says how the node authenticates at start, and refuses to start when it could authenticate nobody.</summary>
internal sealed partial class AccessStartup(AccessState access, TokenCache tokens, IOptions<AccessOptions> options, ILogger<AccessStartup> logger) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (access.Mode == AccessMode.Open)
        {
            LogOpen(logger, access.Reason);
            return Task.CompletedTask;
        }

        if (tokens.Count == 0 && !tokens.HasBootstrap && !options.Value.Jwt.Enabled)
        {
            throw new AccessConfigurationException(
                "authentication is required but no credential exists: create the first token with " +
                "'dotnet Registry.Server.dll tokens create --description \"first admin\" --admin' against the same database, " +
                "or set Registry__Auth__BootstrapToken (or Registry:Auth:Mode=Open for a private node).");
        }

        LogRequired(logger, tokens.Count, tokens.HasBootstrap, options.Value.Jwt.Enabled ? options.Value.Jwt.Issuer! : "none");
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    [LoggerMessage(Level = LogLevel.Warning, Message = "Authentication is OFF (Registry:Auth:Mode Open: {Reason}): anyone who reaches this node may register, unregister and read any application")]
    private static partial void LogOpen(ILogger logger, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Authentication required: {Tokens} registry tokens, bootstrap token {Bootstrap}, JWT issuer {Issuer}")]
    private static partial void LogRequired(ILogger logger, int tokens, bool bootstrap, string issuer);
}
