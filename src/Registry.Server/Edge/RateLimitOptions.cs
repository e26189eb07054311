using System.ComponentModel.DataAnnotations;

namespace Registry.Edge;

/// <summary>Per-client rate limiting of the <c>/v1</c> API (section <c>Registry:RateLimit</c>); off by default.</summary>
public sealed class RateLimitOptions
{
    /// <summary>Requests a second each credential, or each client address (an IPv6 one as its network), may make (token bucket refill); 0 turns rate limiting off.</summary>
    [Range(0, 1_000_000)]
    public int PermitsPerSecond { get; set; }

    /// <summary>Requests a client may make at once before the rate applies.</summary>
    [Range(1, 1_000_000)]
    public int Burst { get; set; } = 100;
}
