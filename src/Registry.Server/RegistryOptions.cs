using System.ComponentModel.DataAnnotations;

namespace Registry;

/// <summary>Input limits (section <c>Registry:Limits</c>); each answers 400 or 413 past it.</summary>
public sealed class LimitsOptions
{
    /// <summary>Largest request body in bytes; larger is 413.</summary>
    [Range(1024, 16 * 1024 * 1024)]
    public int MaxBodyBytes { get; set; } = 64 * 1024;

    /// <summary>Most characters in an application (or provider) name.</summary>
    [Range(1, 1024)]
    public int MaxApplicationLength { get; set; } = 128;

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

    /// <summary>Most characters in a <c>version</c> query parameter.</summary>
    [Range(1, 4096)]
    public int MaxVersionLength { get; set; } = 128;

    /// <summary>Most requests one client (remote address and credential) may hold parked on a node; beyond it 429.</summary>
    [Range(1, 10_000_000)]
    public int MaxParkedPerClient { get; set; } = 1_000;

    /// <summary>Most requests a node holds parked in all; beyond it 429.</summary>
    [Range(1, 10_000_000)]
    public int MaxParked { get; set; } = 50_000;

    /// <summary>Most distinct subscriptions a node holds; a new one beyond it is 429.</summary>
    [Range(1, 10_000_000)]
    public int MaxSubscriptions { get; set; } = 10_000;

    /// <summary>The Retry-After sent with a 429 for one of the limits above, in seconds.</summary>
    [Range(1, 3600)]
    public int RetryAfterSeconds { get; set; } = 5;
}

/// <summary>Leases, renewals, the sweeper and self-preservation (section <c>Registry:Leases</c>).</summary>
public sealed class LeaseOptions
{
    /// <summary>TTL granted when a registration asks for none, in seconds.</summary>
    [Range(1, int.MaxValue)]
    public int DefaultTtlSeconds { get; set; } = 30;

    /// <summary>Smallest TTL granted; smaller requests are clamped up.</summary>
    [Range(1, int.MaxValue)]
    public int MinTtlSeconds { get; set; } = 1;

    /// <summary>Largest TTL granted; larger requests are clamped down.</summary>
    [Range(1, int.MaxValue)]
    public int MaxTtlSeconds { get; set; } = 86_400;

    /// <summary>How often a node writes the renewals it has gathered (one statement each time).</summary>
    public TimeSpan RenewalInterval { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// A heartbeat whose renewal has waited unrecorded (the database unreachable from this node)
    /// for this share of its TTL is refused with 503, so the provider fails over to a node that
    /// can record it before the lease runs out in the database.
    /// </summary>
    [Range(0.01, 1.0)]
    public double UnrecordedShare { get; set; } = 0.25;

    /// <summary>How often a node marks itself alive in <c>nodes</c> (the grace rule reads when the cluster last could record).</summary>
    public TimeSpan LivenessInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// When no node has marked itself alive for longer than this, the cluster could not record
    /// renewals: the leases live when that began are extended by their TTL before anything is
    /// swept. Keep it a few <see cref="LivenessInterval"/>s.
    /// </summary>
    public TimeSpan GraceGap { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>How often the sweeper looks for expired leases.</summary>
    public TimeSpan SweepInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Most instances one sweep statement deletes.</summary>
    [Range(1, 100_000)]
    public int SweepBatchSize { get; set; } = 1000;

    /// <summary>Self-preservation: the share of live instances whose eviction within <see cref="SelfPreservationWindow"/> is abnormal.</summary>
    [Range(0.0, 1.0)]
    public double SelfPreservationShare { get; set; } = 0.15;

    /// <summary>Self-preservation engages only when more than this many instances would be evicted within the window.</summary>
    [Range(0, int.MaxValue)]
    public int SelfPreservationMinInstances { get; set; } = 10;

    /// <summary>The window the share is measured over; while engaged, at most the share is evicted per window.</summary>
    public TimeSpan SelfPreservationWindow { get; set; } = TimeSpan.FromMinutes(1);
}

/// <summary>Long polling (section <c>Registry:Subscriptions</c>).</summary>
public sealed class SubscriptionOptions
{
    /// <summary>Hold time when <c>wait</c> is absent, in seconds.</summary>
    [Range(0, 3600)]
    public int DefaultWaitSeconds { get; set; } = 30;

    /// <summary>Largest hold time; larger <c>wait</c> values are clamped (keep it under proxies' idle timeouts).</summary>
    [Range(0, 3600)]
    public int MaxWaitSeconds { get; set; } = 55;

    /// <summary>Random jitter added to a hold: up to wait divided by this.</summary>
    [Range(1, 1_000_000)]
    public int JitterDivisor { get; set; } = 16;

    /// <summary>On shutdown, parked polls are answered spread over this long so consumers do not reconnect at once.</summary>
    public TimeSpan ShutdownSpread { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>
    /// How many answers larger than 64 KiB the node writes at a time (0: one per processor). The
    /// rest wait their turn, so that a change fanned out to many consumers of a big application
    /// does not hold up the node's other replies.
    /// </summary>
    [Range(0, 100_000)]
    public int LargeAnswerWriters { get; set; }

    /// <summary>A large answer whose consumer has not taken a 64 KiB chunk within this long gives up its turn to the next.</summary>
    public TimeSpan SlowReaderYield { get; set; } = TimeSpan.FromMilliseconds(50);
}

/// <summary>The group-committed write path (section <c>Registry:Writes</c>).</summary>
public sealed class WriteOptions
{
    /// <summary>Most registrations and unregistrations committed in one transaction.</summary>
    [Range(1, 10_000)]
    public int MaxBatchSize { get; set; } = 500;

    /// <summary>Most writes waiting for a batch; beyond it writes answer 503 with Retry-After.</summary>
    [Range(1, 1_000_000)]
    public int MaxQueueLength { get; set; } = 20_000;

    /// <summary>The Retry-After sent with a 503 when the database cannot take a write, in seconds.</summary>
    [Range(1, 3600)]
    public int RetryAfterSeconds { get; set; } = 2;
}

/// <summary>The LISTEN connection and the in-memory registry (section <c>Registry:ChangeFeed</c>).</summary>
public sealed class ChangeFeedOptions
{
    /// <summary>After this long without a notification the listener proves its connection with a query.</summary>
    public TimeSpan IdleCheckInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a liveness query or a readiness round trip may take.</summary>
    public TimeSpan CheckTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Longest pause between reconnection attempts (backoff grows up to it).</summary>
    public TimeSpan MaxReconnectDelay { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often a node compares per-application counts and revisions with the database, to catch a lost notification.</summary>
    public TimeSpan ConsistencyCheckInterval { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>The database connection (section <c>Registry:Database</c>).</summary>
public sealed class DatabaseOptions
{
    /// <summary>Seconds to wait for a connection before a request answers 503.</summary>
    [Range(1, 300)]
    public int ConnectTimeoutSeconds { get; set; } = 5;

    /// <summary>Seconds a statement may run.</summary>
    [Range(1, 3600)]
    public int CommandTimeoutSeconds { get; set; } = 30;

    /// <summary>Where the private PostgreSQL cluster lives when no connection string is configured; empty means a folder under the system's temporary directory.</summary>
    public string LocalDataDirectory { get; set; } = "";

    /// <summary>Folder of the PostgreSQL server binaries (initdb, pg_ctl); empty means search /usr/lib/postgresql/*/bin and PATH.</summary>
    public string LocalBinDirectory { get; set; } = "";
}

/// <summary>Per-client rate limiting of the <c>/v1</c> API (section <c>Registry:RateLimit</c>); off by default.</summary>
public sealed class RateLimitOptions
{
    /// <summary>Requests a second each client address may make (token bucket refill); 0 turns rate limiting off.</summary>
    [Range(0, 1_000_000)]
    public int PermitsPerSecond { get; set; }

    /// <summary>Requests a client may make at once before the rate applies.</summary>
    [Range(1, 1_000_000)]
    public int Burst { get; set; } = 100;
}
