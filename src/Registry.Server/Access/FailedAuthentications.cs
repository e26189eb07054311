using System.Net;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Registry.Edge;

namespace Registry.Access;

/// <summary>
/// Counts failed authentications per client address (per IPv6 network of
/// <see cref="AccessOptions.FailurePrefixLengthIpv6"/>); past <see cref="AccessOptions.MaxFailuresPerMinute"/>
/// in a minute the address gets 429 instead of 401, so secrets cannot be guessed at speed.
/// </summary>
internal sealed class FailedAuthentications : IDisposable
{
    private readonly PartitionedRateLimiter<string>? _limiter;
    private readonly int _prefixLengthIpv6;

    public FailedAuthentications(IOptions<AccessOptions> options)
    {
        _prefixLengthIpv6 = options.Value.FailurePrefixLengthIpv6;
        var permits = options.Value.MaxFailuresPerMinute;
        _limiter = permits == 0
            ? null
            : PartitionedRateLimiter.Create<string, string>(address => RateLimitPartition.GetFixedWindowLimiter(address, _ => new FixedWindowRateLimiterOptions
            {
                PermitLimit = permits,
                Window = TimeSpan.FromMinutes(1),
                QueueLimit = 0,
                AutoReplenishment = true,
            }));
    }

    /// <summary>Records a failure; false (with the seconds to wait) when the address is over its limit.</summary>
    private bool TryRecord(HttpContext http, out int retryAfterSeconds) => Attempt(http, permits: 1, out retryAfterSeconds);

    /// <summary>Whether the address has no failures left in this window (it gets 429 for the next one), with the seconds to wait.</summary>
    public bool IsOverLimit(HttpContext http, out int retryAfterSeconds) => !Attempt(http, permits: 0, out retryAfterSeconds);

    /// <summary>
    /// A failed authentication, counted as it fails: the challenge that answers it must not count it again, and a rate
    /// limiter that turns it away before the challenge must not leave it uncounted (a right guess of the bootstrap
    /// token among uncounted wrong ones would pass).
    /// </summary>
    public AuthenticateResult Failed(HttpContext http, string reason) =>
        AuthenticateResult.Fail(TryRecord(http, out var retryAfter) ? new CountedFailure(reason, 0) : new CountedFailure("too many failed authentications from this address", retryAfter));

    /// <summary>
    /// Whether a request whose authentication failed (or that sent no credential) may be answered 401: its failure
    /// counted now, unless it was when it failed. False, with the seconds to wait, when the address is over its limit.
    /// </summary>
    public bool MayAnswer(HttpContext http, Exception? failure, out int retryAfterSeconds)
    {
        if (failure is CountedFailure counted)
        {
            retryAfterSeconds = counted.RetryAfterSeconds;
            return retryAfterSeconds == 0;
        }

        return TryRecord(http, out retryAfterSeconds);
    }

    private bool Attempt(HttpContext http, int permits, out int retryAfterSeconds)
    {
        retryAfterSeconds = 0;
        if (_limiter is null)
        {
            return true;
        }

        using var lease = _limiter.AttemptAcquire(CountedUnder(http.Connection.RemoteIpAddress), permits);
        if (lease.IsAcquired)
        {
            return true;
        }

        retryAfterSeconds = lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)) : 60;
        return false;
    }

    /// <summary>An IPv4 address as itself, an IPv6 address as its network (<c>2001:db8:1:2::/64</c>).</summary>
    private string CountedUnder(IPAddress? address) => Network.CountedAs(address, _prefixLengthIpv6);

    /// <summary>The answer to an address over its limit: 429 with Retry-After.</summary>
    public static ProblemHttpResult TooMany(HttpContext http, int retryAfterSeconds)
    {
        http.Response.Headers.RetryAfter = retryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return TypedResults.Problem(
            statusCode: StatusCodes.Status429TooManyRequests,
            title: "Too many failed authentications",
            detail: $"This client address sent too many requests without a valid credential; retry after {retryAfterSeconds} s.");
    }

    public void Dispose() => _limiter?.Dispose();
}

/// <summary>A failed authentication already counted; <see cref="RetryAfterSeconds"/> is positive when the address is over its limit.</summary>
internal sealed class CountedFailure(string message, int retryAfterSeconds) : Exception(message)
{
    public int RetryAfterSeconds { get; } = retryAfterSeconds;
}

/// <summary>
/// For an endpoint open to all that still reads the credential it is sent (<c>/readyz</c> shows
/// its details to admin): a credential that was sent and is not valid has counted as a failed
/// authentication, as everywhere, and past the limit the answer is 429, as a challenge's would be.
/// Otherwise such an endpoint would let anyone test guesses of a secret (the bootstrap token) at full speed. A
/// request without a credential counts nothing, so an orchestrator's probes keep passing, and a
/// valid credential passes from a limited address as it does everywhere.
/// </summary>
internal sealed class CountFailedAuthentication(FailedAuthentications failures) : IEndpointFilter
{
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        // The outcome the authentication middleware already has: handlers keep it for the request.
        var outcome = await http.AuthenticateAsync();
        if (outcome.Failure is not null && !failures.MayAnswer(http, outcome.Failure, out var retryAfter))
        {
            return FailedAuthentications.TooMany(http, retryAfter);
        }

        return await next(context);
    }
}
