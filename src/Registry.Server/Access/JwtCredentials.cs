using System.Security.Claims;
using Microsoft.AspNetCore.Authentication.JwtBearer;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Protocols;
using Microsoft.IdentityModel.Protocols.OpenIdConnect;
using Microsoft.IdentityModel.Tokens;

namespace Registry.Access;

/// <summary>
/// JWT bearer credentials from an identity provider: the framework's JwtBearer handler
/// validates signature, issuer, audience and lifetime against a JWKS (URL or file, refreshed
/// periodically); here its claims become a <see cref="Grant"/>.
/// </summary>
internal sealed class JwtCredentials(IOptions<AccessOptions> access) : IConfigureNamedOptions<JwtBearerOptions>
{
    public const string SchemeName = "Jwt";

    public void Configure(string? name, JwtBearerOptions options)
    {
        if (name != SchemeName)
        {
            return;
        }

        var jwt = access.Value.Jwt;
        options.MapInboundClaims = false;
        options.TokenValidationParameters = new TokenValidationParameters
        {
            ValidIssuer = jwt.Issuer,
            ValidAudience = jwt.Audience,
            ValidateIssuer = true,
            ValidateAudience = true,
            ValidateLifetime = true,
            RequireExpirationTime = true,
            ValidateIssuerSigningKey = true,
            ClockSkew = jwt.ClockSkew,
        };
        if (jwt.Enabled)
        {
            var (address, retriever) = string.IsNullOrWhiteSpace(jwt.JwksFile)
                ? (jwt.JwksUrl!, (IDocumentRetriever)new HttpDocumentRetriever { RequireHttps = true })
                : (Path.GetFullPath(jwt.JwksFile), new FileDocumentRetriever());
            options.ConfigurationManager = new ConfigurationManager<OpenIdConnectConfiguration>(address, new JwksRetriever(), retriever)
            {
                AutomaticRefreshInterval = jwt.JwksRefreshInterval,
            };
        }

        options.Events = new JwtBearerEvents
        {
            OnTokenValidated = context =>
            {
                // Accepted until exp and the skew allowed: what ends a session opened with it.
                var expires = new DateTimeOffset(DateTime.SpecifyKind(context.SecurityToken.ValidTo, DateTimeKind.Utc)) + jwt.ClockSkew;
                context.Principal = new ClaimsPrincipal(new CredentialIdentity(GrantOf(context.Principal!, jwt, expires), SchemeName));
                return Task.CompletedTask;
            },
        };
    }

    public void Configure(JwtBearerOptions options) => Configure(Options.DefaultName, options);

    private static Grant GrantOf(ClaimsPrincipal principal, JwtOptions jwt, DateTimeOffset expires)
    {
        string[] Patterns(string claim) => principal.FindAll(claim).Select(c => c.Value).Where(Grant.IsPattern).ToArray();
        var admin = principal.FindFirst(jwt.AdminClaim)?.Value is { } value && bool.TryParse(value, out var flag) && flag;
        var id = principal.FindFirst(jwt.IdClaim)?.Value ?? "unnamed";
        return new Grant($"jwt:{id}", Patterns(jwt.RegisterClaim), Patterns(jwt.SubscribeClaim), admin, expires);
    }

    /// <summary>Reads a bare JSON Web Key Set (what Kubernetes and most providers serve at their jwks_uri) as the signing keys.</summary>
    private sealed class JwksRetriever : IConfigurationRetriever<OpenIdConnectConfiguration>
    {
        public async Task<OpenIdConnectConfiguration> GetConfigurationAsync(string address, IDocumentRetriever retriever, CancellationToken cancel)
        {
            var keys = new JsonWebKeySet(await retriever.GetDocumentAsync(address, cancel));
            var configuration = new OpenIdConnectConfiguration();
            foreach (var key in keys.GetSigningKeys())
            {
                configuration.SigningKeys.Add(key);
            }

            return configuration;
        }
    }
}
