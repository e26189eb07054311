using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;

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

/// <summary>
/// Writes the problem documents of requests whose <c>Accept</c> names no JSON type (a browser's
/// <c>text/html</c>, an event-stream client's <c>text/event-stream</c>), which the framework's
/// writer declines: its own 404, 405 and exception answers were then <c>text/plain</c> or empty.
/// The API has one error format, and RFC 9110 lets a server answer in it whatever was asked for.
/// Every other problem is written by the framework's writer, as before (these lack only its
/// <c>type</c> link, which RFC 9457 then reads as <c>about:blank</c>).
/// </summary>
internal sealed class ProblemWriterForAnyAccept(IOptions<JsonOptions> json, IOptions<ProblemDetailsOptions> options) : IProblemDetailsWriter
{
    private static readonly MediaTypeHeaderValue Json = new("application/json");
    private static readonly MediaTypeHeaderValue ProblemJson = new("application/problem+json");

    public bool CanWrite(ProblemDetailsContext context)
    {
        var accept = context.HttpContext.Request.GetTypedHeaders().Accept;
        return accept.Count > 0 && !accept.Any(range => Json.IsSubsetOf(range) || ProblemJson.IsSubsetOf(range));
    }

    public ValueTask WriteAsync(ProblemDetailsContext context)
    {
        var problem = context.ProblemDetails;
        var response = context.HttpContext.Response;
        problem.Status ??= response.StatusCode;
        problem.Title ??= ReasonPhrases.GetReasonPhrase(problem.Status.Value);
        // As the framework's writer adds it, so a log line can be found from the answer.
        problem.Extensions.TryAdd("traceId", System.Diagnostics.Activity.Current?.Id ?? context.HttpContext.TraceIdentifier);
        options.Value.CustomizeProblemDetails?.Invoke(context);
        return new ValueTask(response.WriteAsJsonAsync(problem, json.Value.SerializerOptions.GetTypeInfo(problem.GetType()), "application/problem+json"));
    }
}
