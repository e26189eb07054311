using System.Globalization;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Options;

namespace Registry.Edge;

/// <summary>
/// A token bucket per credential (or, without one, per client address) in front of the
/// <c>/v1</c> API, for registries shared by teams that may loop too fast. Rejections are 429 problem documents with Retry-After.
/// </summary>
internal sealed class PerClientRateLimitPolicy(IOptions<RateLimitOptions> options, IOptions<NetworkOptions> network) : IRateLimiterPolicy<string>
{
    public const string Name = "per-client";

    public Func<OnRejectedContext, CancellationToken, ValueTask>? OnRejected { get; } = async (context, cancellationToken) =>
    {
        var http = context.HttpContext;
        var retryAfter = RetryAfterSeconds(context.Lease);
        http.Response.StatusCode = StatusCodes.Status429TooManyRequests;
        http.Response.Headers.RetryAfter = retryAfter.ToString(CultureInfo.InvariantCulture);
        await TypedResults.Problem(
            statusCode: StatusCodes.Status429TooManyRequests,
            title: "Too many requests",
            detail: $"This client sent more than the configured rate; retry after {retryAfter} s.").ExecuteAsync(http);
    };

    public RateLimitPartition<string> GetPartition(HttpContext httpContext)
    {
        var settings = options.Value;
        if (settings.PermitsPerSecond == 0)
        {
            return RateLimitPartition.GetNoLimiter("off");
        }

        // Per credential when there is one (a team's token, wherever it calls from), else
        // per client address (after forwarded headers from trusted proxies; an IPv6 address as
        // its network, as every per-client limit counts it: a host is often given a whole /64).
        var partition = httpContext.User.FindFirst(System.Security.Claims.ClaimTypes.NameIdentifier)?.Value is { } credential
            ? "credential:" + credential
            : "address:" + Network.CountedAs(httpContext.Connection.RemoteIpAddress, network.Value.ClientPrefixLengthIpv6);
        return RateLimitPartition.GetTokenBucketLimiter(partition, _ => Bucket(settings.PermitsPerSecond, settings.Burst));
    }

    /// <summary>A bucket of <paramref name="burst"/> permits refilled with <paramref name="perSecond"/> a second; no queue.</summary>
    public static TokenBucketRateLimiterOptions Bucket(int perSecond, int burst) => new()
    {
        TokenLimit = burst,
        TokensPerPeriod = perSecond,
        ReplenishmentPeriod = TimeSpan.FromSeconds(1),
        QueueLimit = 0,
        AutoReplenishment = true,
    };

    /// <summary>Whole seconds until a refused lease's bucket has a permit again (at least 1).</summary>
    public static int RetryAfterSeconds(RateLimitLease lease) =>
        lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)) : 1;
}

/// <summary>Registers the rate limiter with its one policy.</summary>
internal static class RateLimiting
{
    public const string PolicyName = PerClientRateLimitPolicy.Name;

    public static IServiceCollection AddRegistryRateLimiting(this IServiceCollection services) =>
        services.AddRateLimiter(limiter => limiter.AddPolicy<string, PerClientRateLimitPolicy>(PolicyName));
}
