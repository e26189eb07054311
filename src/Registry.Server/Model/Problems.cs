using Microsoft.AspNetCore.Http.HttpResults;

namespace Registry.Model;

/// <summary>The problem documents (RFC 9457) the API answers with.</summary>
internal static class Problems
{
    public static ValidationProblem Invalid(Errors errors) =>
        TypedResults.ValidationProblem(errors.ToDictionary(), detail: errors.Summary(), title: "The request is invalid");

    public static ValidationProblem Invalid(string field, string reason)
    {
        var errors = new Errors();
        errors.Add(field, reason);
        return Invalid(errors);
    }

    public static ProblemHttpResult NotRegistered(InstanceKey key) => TypedResults.Problem(
        statusCode: StatusCodes.Status404NotFound,
        title: "Instance not registered",
        detail: $"{key.Application} {key.Protocol} {key.Addr} is not registered (never registered, unregistered, or its lease ran out); register it again.");

    public static ProblemHttpResult TooMany(HttpContext http, int retryAfterSeconds, string detail)
    {
        http.Response.Headers.RetryAfter = retryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return TypedResults.Problem(statusCode: StatusCodes.Status429TooManyRequests, title: "Too many requests", detail: detail);
    }

    public static ProblemHttpResult Unavailable(HttpContext http, int retryAfterSeconds, string detail)
    {
        http.Response.Headers.RetryAfter = retryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return TypedResults.Problem(statusCode: StatusCodes.Status503ServiceUnavailable, title: "Service unavailable", detail: detail);
    }
}
