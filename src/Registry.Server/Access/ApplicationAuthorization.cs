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

/// <summary>The admin scope (what an application's scopes are is decided by <see cref="ApplicationAccess"/>).</summary>
internal sealed class AdminRequirement : IAuthorizationRequirement;

internal sealed class AdminHandler : AuthorizationHandler<AdminRequirement>
{
    protected override Task HandleRequirementAsync(AuthorizationHandlerContext context, AdminRequirement requirement)
    {
        if (CredentialIdentity.Of(context.User)?.Admin == true)
        {
            context.Succeed(requirement);
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
internal sealed class ApplicationAccess
{
    /// <summary>Null when <paramref name="user"/> holds <paramref name="scope"/> for every one of <paramref name="applications"/>; else the 403 naming the first it lacks.</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Performance", "CA1822", Justification = "A service the endpoints take by injection, so the rule may gain dependencies without changing them.")]
    public ValueTask<ProblemHttpResult?> DenyAsync(ClaimsPrincipal user, Scope scope, IEnumerable<string> applications)
    {
        // Decided from the grant directly rather than through IAuthorizationService: this runs
        // on every request, and each policy evaluation allocated a context, a set and an iterator.
        var grant = CredentialIdentity.Of(user);
        foreach (var application in applications)
        {
            if (grant is null || !grant.Allows(scope, application))
            {
                return ValueTask.FromResult<ProblemHttpResult?>(AccessProblems.Forbidden(scope, application));
            }
        }

        return ValueTask.FromResult<ProblemHttpResult?>(null);
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
