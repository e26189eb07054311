using System.Text.Json.Serialization;

namespace Registry.Client;

/// <summary>
/// A provider instance: the provider document of the registry's API (<c>application</c>,
/// <c>protocol</c>, <c>addr</c>, <c>meta</c>), and each endpoint of an answer.
/// </summary>
public sealed class ProviderInstance
{
    private static readonly IReadOnlyDictionary<string, string> NoMeta = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Creates a provider instance.</summary>
    /// <param name="application">The application name, e.g. <c>provider_test</c>.</param>
    /// <param name="protocol">The protocol served, e.g. <c>http</c>.</param>
    /// <param name="addr">Where the instance serves: <c>host:port</c>.</param>
    /// <param name="meta">String metadata that subscriptions match on.</param>
    [JsonConstructor]
    public ProviderInstance(string application, string protocol, string addr, IReadOnlyDictionary<string, string>? meta = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(application);
        ArgumentException.ThrowIfNullOrWhiteSpace(protocol);
        ArgumentException.ThrowIfNullOrWhiteSpace(addr);
        Application = application;
        Protocol = protocol;
        Addr = addr;
        Meta = meta ?? NoMeta;
    }

    /// <summary>The application name.</summary>
    [JsonPropertyName("application")]
    public string Application { get; }

    /// <summary>The protocol served.</summary>
    [JsonPropertyName("protocol")]
    public string Protocol { get; }

    /// <summary>Where the instance serves: <c>host:port</c>.</summary>
    [JsonPropertyName("addr")]
    public string Addr { get; }

    /// <summary>String metadata (empty when none).</summary>
    [JsonPropertyName("meta")]
    public IReadOnlyDictionary<string, string> Meta { get; }

    /// <inheritdoc />
    public override string ToString() => $"{Application} {Protocol}://{Addr}";
}

/// <summary>One entry of a subscription: which instances of one provider to watch.</summary>
public sealed class SubscriptionEntry
{
    /// <summary>Creates an entry.</summary>
    /// <param name="provider">The application subscribed to.</param>
    /// <param name="protocol">The protocol wanted; <see langword="null"/> matches any.</param>
    /// <param name="meta">Pairs an instance must carry (subset match); <see langword="null"/> or empty matches all.</param>
    [JsonConstructor]
    public SubscriptionEntry(string provider, string? protocol = null, IReadOnlyDictionary<string, string>? meta = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(provider);
        Provider = provider;
        Protocol = protocol;
        // Canonical form (sorted by key, ordinal) so that equal subscriptions serialise to equal bytes,
        // which is what the cache file's ownership check compares.
        Meta = meta is null || meta.Count == 0 ? null : new SortedDictionary<string, string>(meta.ToDictionary(p => p.Key, p => p.Value, StringComparer.Ordinal), StringComparer.Ordinal);
    }

    /// <summary>The application subscribed to.</summary>
    [JsonPropertyName("provider")]
    public string Provider { get; }

    /// <summary>The protocol wanted; <see langword="null"/> matches any.</summary>
    [JsonPropertyName("protocol")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Protocol { get; }

    /// <summary>Pairs an instance must carry; <see langword="null"/> matches all.</summary>
    [JsonPropertyName("meta")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyDictionary<string, string>? Meta { get; }
}

/// <summary>The answer to a subscription: the matching endpoints and the version that names them.</summary>
public sealed class RegistryAnswer
{
    /// <summary>Creates an answer.</summary>
    /// <param name="version">The content hash of the endpoints.</param>
    /// <param name="endpoints">The matching instances, sorted by (application, protocol, addr).</param>
    [JsonConstructor]
    public RegistryAnswer(string version, IReadOnlyList<ProviderInstance> endpoints)
    {
        ArgumentNullException.ThrowIfNull(version);
        ArgumentNullException.ThrowIfNull(endpoints);
        Version = version;
        Endpoints = endpoints;
    }

    /// <summary>The opaque version: equal versions mean equal endpoints.</summary>
    [JsonPropertyName("version")]
    public string Version { get; }

    /// <summary>The matching instances.</summary>
    [JsonPropertyName("endpoints")]
    public IReadOnlyList<ProviderInstance> Endpoints { get; }
}

/// <summary>The data of <see cref="RegistrySubscription.Changed"/>.</summary>
public sealed class RegistryAnswerChangedEventArgs(RegistryAnswer? previous, RegistryAnswer current) : EventArgs
{
    /// <summary>The answer held before; <see langword="null"/> for the first one.</summary>
    public RegistryAnswer? Previous { get; } = previous;

    /// <summary>The answer held now.</summary>
    public RegistryAnswer Current { get; } = current;
}

/// <summary>The body of subscribe.</summary>
internal sealed class SubscriptionDocument(IReadOnlyList<SubscriptionEntry> subscribes)
{
    [JsonPropertyName("subscribes")]
    public IReadOnlyList<SubscriptionEntry> Subscribes { get; } = subscribes;
}

/// <summary>The lease part of the answer to register and heartbeat (the provider fields are not needed back).</summary>
internal sealed class LeaseDocument(int ttl, DateTimeOffset expires)
{
    [JsonPropertyName("ttl")]
    public int Ttl { get; } = ttl;

    [JsonPropertyName("expires")]
    public DateTimeOffset Expires { get; } = expires;
}

/// <summary>
/// What the cache file holds: the subscription it belongs to, the last answer, and up to when that answer was known to
/// be the registry's (absent in files written before it was kept).
/// </summary>
internal sealed class CacheDocument(string format, SubscriptionDocument subscription, RegistryAnswer answer, DateTimeOffset? knownAt)
{
    public const string CurrentFormat = "registry-client-cache/1";

    [JsonPropertyName("format")]
    public string Format { get; } = format;

    [JsonPropertyName("subscription")]
    public SubscriptionDocument Subscription { get; } = subscription;

    [JsonPropertyName("answer")]
    public RegistryAnswer Answer { get; } = answer;

    [JsonPropertyName("knownAt")]
    public DateTimeOffset? KnownAt { get; } = knownAt;
}

/// <summary>The answer to <c>GET /v1/services</c>: the applications registered now.</summary>
internal sealed class ServicesDocument(IReadOnlyList<ServiceCount> services)
{
    [JsonPropertyName("services")]
    public IReadOnlyList<ServiceCount> Services { get; } = services;
}

internal sealed class ServiceCount(string application, int instances)
{
    [JsonPropertyName("application")]
    public string Application { get; } = application;

    [JsonPropertyName("instances")]
    public int Instances { get; } = instances;
}

[JsonSerializable(typeof(ProviderInstance))]
[JsonSerializable(typeof(ServicesDocument))]
[JsonSerializable(typeof(SubscriptionDocument))]
[JsonSerializable(typeof(RegistryAnswer))]
[JsonSerializable(typeof(LeaseDocument))]
[JsonSerializable(typeof(CacheDocument))]
[JsonSerializable(typeof(DrainResult))]
internal sealed partial class ClientJson : JsonSerializerContext;
