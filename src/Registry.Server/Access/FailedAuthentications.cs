using System.Threading.RateLimiting;
using Microsoft.Extensions.Options;

namespace Registry.Access;

/// <summary>
/// Counts failed authentications per client address; past <see cref="AccessOptions.MaxFailuresPerMinute"/>
/// in a minute the address gets 429 instead of 401, so secrets cannot be guessed at speed.
/// </summary>
internal sealed class FailedAuthentications : IDisposable
{
    private readonly PartitionedRateLimiter<string>? _limiter;

    public FailedAuthentications(IOptions<AccessOptions> options)
    {
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
    public bool TryRecord(HttpContext http, out int retryAfterSeconds)
    {
        retryAfterSeconds = 0;
        if (_limiter is null)
        {
            return true;
        }

        using var lease = _limiter.AttemptAcquire(http.Connection.RemoteIpAddress?.ToString() ?? "unknown");
        if (lease.IsAcquired)
        {
            return true;
        }

        retryAfterSeconds = lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? Math.Max(1, (int)Math.Ceiling(wait.TotalSeconds)) : 60;
        return false;
    }

    public void Dispose() => _limiter?.Dispose();
}
