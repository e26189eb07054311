using System.Data.Common;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.Extensions.Options;

namespace Registry.Registration;

/// <summary>
/// The safety net behind the endpoints' own handling: a database error that escapes an endpoint
/// is the 503 with Retry-After that the API promises while the database is unreachable, not a
/// 500. Endpoints still catch it themselves where they can say more (or must answer otherwise);
/// one that reaches this is also logged by the exception handler as unhandled.
/// </summary>
internal sealed class DatabaseUnavailableHandler(IProblemDetailsService problems, IOptions<WriteOptions> options) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        if (exception is not DbException)
        {
            return false;
        }

        httpContext.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
        httpContext.Response.Headers.RetryAfter = options.Value.RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            Exception = exception,
            ProblemDetails =
            {
                Status = StatusCodes.Status503ServiceUnavailable,
                Title = "Service unavailable",
                Detail = "The database cannot be reached from this node now; retry shortly.",
            },
        });
    }
}
