using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Registry.Access;
using Registry.Leases;

namespace Registry.Operations;

/// <summary>The result of one readiness check.</summary>
public sealed record CheckResult(bool Ok, string Detail);

/// <summary>The body of <c>/readyz</c>: which check failed, and the self-preservation state (these details for the admin scope only).</summary>
public sealed record Readiness(
    string Status,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] IReadOnlyDictionary<string, CheckResult>? Checks,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] SelfPreservationState? SelfPreservation);

/// <summary>The liveness answer: the process serves HTTP.</summary>
public sealed record Liveness(string Status);

/// <summary>Whether the sweeper on this node is rate-limiting evictions.</summary>
public sealed record SelfPreservationState(bool Engaged, int ExpiredAtLastSweep);

/// <summary>Liveness, readiness and metrics: what operators and orchestrators call.</summary>
internal static class OperationsApi
{
    public static IEndpointRouteBuilder MapOperations(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("").WithTags("Operations");

        group.MapGet("/healthz", Alive)
            .WithName("Health")
            .WithSummary("Is the process alive")
            .WithDescription("200 while the process serves HTTP; it checks nothing else, so an orchestrator restarts only a wedged process.");

        group.MapGet("/readyz", Ready)
            .WithName("Ready")
            .WithSummary("Can this node serve")
            .WithDescription("200 when the database is reachable, the migrations are applied and the change feed is listening " +
                "(proved by a NOTIFY round trip); 503 otherwise. Open to all; for a credential with the admin scope the body " +
                "also names each check and the self-preservation state. The database is asked at most once a second, however " +
                "often this is called. A credential that is sent and not valid counts as a failed authentication: past " +
                "Registry:Auth:MaxFailuresPerMinute from one address the answer is 429, as for a 401 elsewhere.")
            .AddEndpointFilter<CountFailedAuthentication>()
            .Produces<Readiness>(StatusCodes.Status200OK)
            .ProducesProblem(StatusCodes.Status429TooManyRequests)
            .Produces<Readiness>(StatusCodes.Status503ServiceUnavailable);

        // HEAD as well, as load balancers and uptime checkers often ask; left out of the document, which has one operation each.
        group.MapMethods("/healthz", [HttpMethods.Head], Alive).ExcludeFromDescription();
        group.MapMethods("/readyz", [HttpMethods.Head], Ready).AddEndpointFilter<CountFailedAuthentication>().ExcludeFromDescription();

        // For the Swagger UI and any tool; open to all, like the UI itself.
        endpoints.MapMethods(CachedOpenApiDocuments.Route, [HttpMethods.Get, HttpMethods.Head], (string documentName, CachedOpenApiDocuments documents) =>
                documents.Json(documentName) is { } json
                    ? Results.Bytes(json, "application/json;charset=utf-8")
                    : Results.NotFound())
            .ExcludeFromDescription();

        return endpoints;
    }

    private static Ok<Liveness> Alive() => TypedResults.Ok(new Liveness("alive"));

    private static async Task<JsonHttpResult<Readiness>> Ready(HttpContext http, HealthCheckService health, SelfPreservation selfPreservation)
    {
        var report = await health.CheckHealthAsync(check => check.Tags.Contains(ReadinessCheck.Tag), http.RequestAborted);
        var checks = report.Entries.ToDictionary(
            e => e.Key,
            e => new CheckResult(e.Value.Status == HealthStatus.Healthy, e.Value.Description ?? e.Value.Exception?.Message ?? e.Value.Status.ToString()),
            StringComparer.Ordinal);
        var ready = report.Status == HealthStatus.Healthy;
        // Open to orchestrators; what is wrong inside (error texts, hosts) only for admin.
        var body = ApplicationAccess.IsAdmin(http.User)
            ? new Readiness(ready ? "ready" : "not ready", checks, new SelfPreservationState(selfPreservation.Engaged, selfPreservation.LastExpired))
            : new Readiness(ready ? "ready" : "not ready", null, null);
        return TypedResults.Json(body, statusCode: ready ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable);
    }
}
