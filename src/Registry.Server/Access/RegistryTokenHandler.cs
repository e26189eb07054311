using System.Runtime.CompilerServices;
using System.Security.Claims;
using System.Text.Encodings.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;

namespace Registry.Access;

/// <summary>
/// The registry-token scheme: turns <c>Authorization: Bearer rgt_…</c> (or the bootstrap token)
/// into a <see cref="CredentialIdentity"/>. It also answers every challenge and forbid of the
/// node, JWT ones included, so that a refused call always gets the same problem document.
/// </summary>
internal sealed class RegistryTokenHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options,
    ILoggerFactory logger,
    UrlEncoder encoder,
    TokenCache tokens,
    AccessState access,
    FailedAuthentications failures,
    GrantPrincipals principals)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "RegistryToken";

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        var header = Request.Headers.Authorization;
        if (header.Count == 0)
        {
            return access.Mode == AccessMode.Open ? Success(Grant.Anonymous) : AuthenticateResult.NoResult();
        }

        if (Bearer.Token(header) is not { } token)
        {
            return Failed("the Authorization header is not 'Bearer <token>'");
        }

        return tokens.Check(token, out var grant) switch
        {
            // Registry tokens cannot be guessed; the bootstrap token is a secret an operator chose. From an address past
            // its failed-authentication limit a right guess of it gets the same 429 as a wrong one, so the limit slows
            // guessing rather than only answering wrong guesses differently. Registry tokens still pass: a client that
            // shares its address with a misconfigured one is not locked out.
            TokenCheck.Valid when !grant!.Stored && failures.IsOverLimit(Context, out var retryAfter) =>
                AuthenticateResult.Fail(new CountedFailure("too many failed authentications from this address", retryAfter)),
            TokenCheck.Valid => await tokens.StandsAsync(grant!, Context.RequestAborted) ? Success(grant!) : Failed("the bearer token is unknown or revoked"),
            TokenCheck.Expired => Failed("the bearer token has expired"),
            _ => Failed("the bearer token is unknown or revoked"),
        };
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        // The outcome of the default scheme (which may have forwarded to JWT), not this one's;
        // each handler keeps its result for the request, so this authenticates nothing again.
        var outcome = await Context.AuthenticateAsync(AccessServiceExtensions.BearerScheme);
        var reason = outcome.Failure is { } failure
            ? failure is Microsoft.IdentityModel.Tokens.SecurityTokenException ? $"the JWT is not valid ({failure.GetType().Name})" : failure.Message
            : "no bearer token was sent";
        if (!failures.MayAnswer(Context, outcome.Failure, out var retryAfter))
        {
            await FailedAuthentications.TooMany(Context, retryAfter).ExecuteAsync(Context);
            return;
        }

        Response.Headers.WWWAuthenticate = "Bearer";
        await TypedResults.Problem(
            statusCode: StatusCodes.Status401Unauthorized,
            title: "Authentication required",
            detail: $"This call needs 'Authorization: Bearer <token>' with a registry token or a JWT: {reason}.").ExecuteAsync(Context);
    }

    protected override Task HandleForbiddenAsync(AuthenticationProperties properties) =>
        AccessProblems.Forbidden(Scope.Admin, application: null).ExecuteAsync(Context);

    /// <summary>
    /// A failed authentication. Counted now where the rate limiter may turn the request away before the challenge that
    /// would count it (the <c>/v1</c> API); elsewhere it counts where it is answered, by the challenge or by
    /// <see cref="CountFailedAuthentication"/>, so a stale token sent to an endpoint that never answers 401 (an uptime
    /// check of <c>/healthz</c>) does not spend its address's failures.
    /// </summary>
    private AuthenticateResult Failed(string reason) =>
        Context.GetEndpoint()?.Metadata.GetMetadata<Microsoft.AspNetCore.RateLimiting.EnableRateLimitingAttribute>() is not null
            ? failures.Failed(Context, reason)
            : AuthenticateResult.Fail(reason);

    private AuthenticateResult Success(Grant grant) => AuthenticateResult.Success(new AuthenticationTicket(principals.Of(grant), SchemeName));
}

/// <summary>
/// One principal per grant, shared by every request that presents it, rather than a principal,
/// an identity and a claim built for each request: a grant never changes (a token changed or
/// reloaded is a new grant), and nothing writes to a request's principal.
/// </summary>
internal sealed class GrantPrincipals
{
    private readonly ConditionalWeakTable<Grant, ClaimsPrincipal> _principals = new();

    public ClaimsPrincipal Of(Grant grant) =>
        _principals.GetValue(grant, static g => new ClaimsPrincipal(new CredentialIdentity(g, RegistryTokenHandler.SchemeName)));
}

/// <summary>Reads the token of an <c>Authorization: Bearer</c> header.</summary>
internal static class Bearer
{
    public static string? Token(Microsoft.Extensions.Primitives.StringValues header)
    {
        if (header.Count != 1 || header[0] is not { } value || !value.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            return null;
        }

        var token = value["Bearer ".Length..].Trim();
        return token.Length == 0 || token.Length > 8192 || token.Any(char.IsWhiteSpace) ? null : token;
    }

    /// <summary>Three base64url segments: taken for a JWT rather than a registry token.</summary>
    public static bool LooksLikeJwt(string token) => !token.StartsWith(RegistryTokens.Prefix, StringComparison.Ordinal) && token.Count(c => c == '.') == 2;
}
