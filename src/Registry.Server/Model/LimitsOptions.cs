using System.ComponentModel.DataAnnotations;

namespace Registry.Model;

/// <summary>Input limits (section <c>Registry:Limits</c>); each answers 400 or 413 past it.</summary>
public sealed class LimitsOptions
{
    /// <summary>Largest request body in bytes; larger is 413.</summary>
    [Range(1024, 16 * 1024 * 1024)]
    public int MaxBodyBytes { get; set; } = 64 * 1024;

    /// <summary>Most characters in an application (or provider) name.</summary>
    [Range(1, LongestApplicationLength)]
    public int MaxApplicationLength { get; set; } = 128;

    /// <summary>The most <see cref="MaxApplicationLength"/> may be set to (what a token's pattern may name, whatever it is set to).</summary>
    public const int LongestApplicationLength = 1024;

    /// <summary>Most characters in a protocol.</summary>
    [Range(1, 256)]
    public int MaxProtocolLength { get; set; } = 32;

    /// <summary>Most key/value pairs in one meta object.</summary>
    [Range(0, 10_000)]
    public int MaxMetaPairs { get; set; } = 64;

    /// <summary>Most characters in a meta key.</summary>
    [Range(1, 10_000)]
    public int MaxMetaKeyLength { get; set; } = 128;

    /// <summary>Most characters in a meta value.</summary>
    [Range(0, 1_000_000)]
    public int MaxMetaValueLength { get; set; } = 512;

    /// <summary>Most entries in <c>subscribes</c>.</summary>
    [Range(1, 10_000)]
    public int MaxSubscribes { get; set; } = 64;

    /// <summary>
    /// Most characters the distinct subscriptions one client's parked polls hold may name together (a view is kept while
    /// a poll holds it), so that no client alone fills <see cref="MaxSubscriptionCharacters"/>.
    /// </summary>
    [Range(1, int.MaxValue)]
    public int MaxSubscriptionCharactersPerClient { get; set; } = 1_000_000;

    /// <summary>
    /// Most meta pairs a subscription selects on, all its entries together: every change to an application matches
    /// each of them against each of its instances, on the one loop that applies changes.
    /// </summary>
    [Range(0, 100_000)]
    public int MaxSubscriptionMetaPairs { get; set; } = 256;

    /// <summary>Most characters in a <c>version</c> query parameter.</summary>
    [Range(1, 4096)]
    public int MaxVersionLength { get; set; } = 128;

    /// <summary>Most requests one client (remote address and credential) may hold parked on a node; beyond it 429.</summary>
    [Range(1, 10_000_000)]
    public int MaxParkedPerClient { get; set; } = 1_000;

    /// <summary>Most requests a node holds parked in all; beyond it 429.</summary>
    [Range(1, 10_000_000)]
    public int MaxParked { get; set; } = 50_000;

    /// <summary>
    /// Most registrations, unregistrations and session opens one client (remote address and credential) may have
    /// waiting for their batch on a node; beyond it 429. The node's own bound is Registry:Writes:MaxQueueLength.
    /// </summary>
    [Range(1, 10_000_000)]
    public int MaxWritesPerClient { get; set; } = 1_000;

    /// <summary>Most distinct subscriptions a node holds; a new one beyond it is 429.</summary>
    [Range(1, 10_000_000)]
    public int MaxSubscriptions { get; set; } = 10_000;

    /// <summary>
    /// Most characters the distinct subscriptions a node holds may name together (providers, protocols, meta pairs);
    /// a new one beyond it is 429. Each character costs about 6 bytes (held three times, in UTF-16).
    /// </summary>
    [Range(1_000, 1_000_000_000)]
    public long MaxSubscriptionCharacters { get; set; } = 16_000_000;

    /// <summary>
    /// Most bytes of serialised endpoints the distinct subscriptions a node holds may keep together, each run of
    /// endpoints counted once however many subscriptions share it; a new subscription while they keep more is 429.
    /// </summary>
    [Range(10_000, 1L << 40)]
    public long MaxSubscriptionBytes { get; set; } = 512L * 1024 * 1024;

    /// <summary>The Retry-After sent with a 429 for one of the limits above, in seconds.</summary>
    [Range(1, 3600)]
    public int RetryAfterSeconds { get; set; } = 5;
}
