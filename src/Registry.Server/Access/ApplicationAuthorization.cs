using System.Security.Claims;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Registry.Access;

/// <summary>The authorization policies the endpoints name.</summary>
internal static class AccessPolicies
{
    /// <summary>Any authenticated credential (an Open node's anonymous callers included); scopes are checked per application.</summary>
    public const string Caller = "registry-caller";

    /// <summary>The admin scope.</summary>
    public const string Admin = "registry-admin";

    /// <summary>Everyone, unless <see cref="AccessOptions.ProtectMetrics"/>; then the admin scope.</summary>
    public const string Metrics = "registry-metrics";
}

/// <summary>A scope the credential must hold; with an application name as the resource, for that application.</summary>
internal sealed class ScopeRequirement(Scope scope) : IAuthorizationRequirement
{
    public static ScopeRequirement Register { get; } = new(Scope.Register);

    public static ScopeRequirement Subscribe { get; } = new(Scope.Subscribe);

    public static ScopeRequirement Admin { get; } = new(Scope.Admin);

    public Scope Scope { get; } = scope;
}

/// <summary>Decides a <see cref="ScopeRequirement"/> from the credential's grant; the resource, when there is one, is the application's name.</summary>
internal sealed class ScopeHandler : IAuthorizationHandler
{
    public Task HandleAsync(AuthorizationHandlerContext context)
    {
        var grant = CredentialIdentity.Of(context.User);
        foreach (var requirement in context.PendingRequirements.OfType<ScopeRequirement>().ToList())
        {
            // Without an application to judge, only admin will do.
            var allowed = grant is not null && (context.Resource is string application ? grant.Allows(requirement.Scope, application) : grant.Admin);
            if (allowed)
            {
                context.Succeed(requirement);
            }
        }

        return Task.CompletedTask;
    }
}

/// <summary><c>/metrics</c>: open unless protected.</summary>
internal sealed class MetricsRequirement : IAuthorizationRequirement;

internal sealed class MetricsHandler(IOptions<AccessOptions> options) : AuthorizationHandler<MetricsRequirement>
{
    protected override Task HandleRequirementAsync(AuthorizationHandlerContext context, MetricsRequirement requirement)
    {
        if (!options.Value.ProtectMetrics || CredentialIdentity.Of(context.User)?.Admin == true)
        {
            context.Succeed(requirement);
        }

        return Task.CompletedTask;
    }
}

/// <summary>
/// Resource-based authorization for the endpoints, whose application is known only once the
/// body is read: one call, and the 403 problem to answer when it fails.
/// </summary>
internal sealed class ApplicationAccess(IAuthorizationService authorization)
{
    /// <summary>Null when <paramref name="user"/> holds <paramref name="scope"/> for every one of <paramref name="applications"/>; else the 403 naming the first it lacks.</summary>
    public async ValueTask<ProblemHttpResult?> DenyAsync(ClaimsPrincipal user, Scope scope, IEnumerable<string> applications)
    {
        var requirement = scope == Scope.Register ? ScopeRequirement.Register : ScopeRequirement.Subscribe;
        foreach (var application in applications)
        {
            if (!(await authorization.AuthorizeAsync(user, application, requirement)).Succeeded)
            {
                return AccessProblems.Forbidden(scope, application);
            }
        }

        return null;
    }

    public ValueTask<ProblemHttpResult?> DenyAsync(ClaimsPrincipal user, Scope scope, string application) => DenyAsync(user, scope, [application]);

    /// <summary>Whether the credential holds the admin scope.</summary>
    public static bool IsAdmin(ClaimsPrincipal user) => CredentialIdentity.Of(user)?.Admin == true;
}

/// <summary>The 403 problem document.</summary>
internal static class AccessProblems
{
    public static ProblemHttpResult Forbidden(Scope scope, string? application)
    {
        var name = scope.ToString().ToLowerInvariant();
        var problem = new Microsoft.AspNetCore.Mvc.ProblemDetails
        {
            Status = StatusCodes.Status403Forbidden,
            Title = "Forbidden",
            Detail = application is null
                ? $"This credential lacks the '{name}' scope this call needs."
                : $"This credential lacks the '{name}' scope for application '{application}'.",
        };
        problem.Extensions["scope"] = name;
        if (application is not null)
        {
            problem.Extensions["application"] = application;
        }

        return TypedResults.Problem(problem);
    }
}
