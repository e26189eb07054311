using System.Diagnostics.CodeAnalysis;
using System.Text.Json.Serialization;

namespace Registry.Model;

/// <summary>The identity of an instance: compared exactly, case-sensitive.</summary>
public readonly record struct InstanceKey(string Application, string Protocol, string Addr)
{
    /// <summary>Orders keys by (application, protocol, addr), byte-wise.</summary>
    public static int CompareOrdinal(InstanceKey x, InstanceKey y)
    {
        var c = string.CompareOrdinal(x.Application, y.Application);
        if (c != 0)
        {
            return c;
        }

        c = string.CompareOrdinal(x.Protocol, y.Protocol);
        return c != 0 ? c : string.CompareOrdinal(x.Addr, y.Addr);
    }
}

/// <summary>
/// Metadata as key/value pairs sorted by key in ordinal order: the canonical form that
/// answers are serialised and hashed from.
/// </summary>
public sealed class Meta : IEquatable<Meta>
{
    private readonly KeyValuePair<string, string>[] _pairs;

    /// <summary>The empty metadata.</summary>
    public static Meta Empty { get; } = new([]);

    private Meta(KeyValuePair<string, string>[] sortedPairs) => _pairs = sortedPairs;

    /// <summary>Builds the canonical form of the given pairs (keys must be distinct).</summary>
    public static Meta From(IEnumerable<KeyValuePair<string, string>> pairs) => FromOwned(pairs.ToArray());

    /// <summary>
    /// Builds the canonical form from an array no one else holds (keys must be distinct): it is
    /// sorted in place and kept. Metadata has a handful of pairs, so an insertion sort, which
    /// allocates nothing (a full load builds one per instance).
    /// </summary>
    internal static Meta FromOwned(KeyValuePair<string, string>[] pairs)
    {
        if (pairs.Length == 0)
        {
            return Empty;
        }

        for (var i = 1; i < pairs.Length; i++)
        {
            var pair = pairs[i];
            var j = i - 1;
            for (; j >= 0 && string.CompareOrdinal(pairs[j].Key, pair.Key) > 0; j--)
            {
                pairs[j + 1] = pairs[j];
            }

            pairs[j + 1] = pair;
        }

        return new Meta(pairs);
    }

    /// <summary>The pairs in canonical order.</summary>
    public ReadOnlySpan<KeyValuePair<string, string>> Pairs => _pairs;

    /// <summary>A copy of the pairs in canonical order.</summary>
    public KeyValuePair<string, string>[] ToArray() => (KeyValuePair<string, string>[])_pairs.Clone();

    /// <summary>The number of pairs.</summary>
    public int Count => _pairs.Length;

    /// <summary>Whether every pair of <paramref name="subset"/> is present here with the same value.</summary>
    public bool Contains(Meta subset)
    {
        foreach (var (key, value) in subset._pairs)
        {
            if (!TryGetValue(key, out var mine) || !string.Equals(mine, value, StringComparison.Ordinal))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Looks a key up (binary search over the sorted pairs).</summary>
    public bool TryGetValue(string key, out string value)
    {
        int lo = 0, hi = _pairs.Length - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            var c = string.CompareOrdinal(_pairs[mid].Key, key);
            if (c == 0)
            {
                value = _pairs[mid].Value;
                return true;
            }

            if (c < 0)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        value = "";
        return false;
    }

    /// <summary>The pairs as a dictionary that serialises in canonical order.</summary>
    public IReadOnlyDictionary<string, string> ToDictionary()
    {
        // Dictionary enumerates in insertion order while nothing is removed.
        var dictionary = new Dictionary<string, string>(_pairs.Length, StringComparer.Ordinal);
        foreach (var (key, value) in _pairs)
        {
            dictionary.Add(key, value);
        }

        return dictionary;
    }

    /// <inheritdoc />
    public bool Equals(Meta? other) =>
        other is not null && _pairs.AsSpan().SequenceEqual(other._pairs);

    /// <inheritdoc />
    public override bool Equals(object? obj) => Equals(obj as Meta);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var hash = new HashCode();
        foreach (var (key, value) in _pairs)
        {
            hash.Add(key, StringComparer.Ordinal);
            hash.Add(value, StringComparer.Ordinal);
        }

        return hash.ToHashCode();
    }
}

/// <summary>A provider as validated from a request body.</summary>
public sealed record Provider(string Application, string Protocol, string Addr, Meta Meta)
{
    /// <summary>The instance's identity.</summary>
    public InstanceKey Key => new(Application, Protocol, Addr);
}

/// <summary>One entry of a subscription, validated.</summary>
public sealed record SubscriptionEntry(string Provider, string? Protocol, Meta Meta);

// The request documents are what RequestReader binds, under the strict contract of RequestJson;
// [DisallowNull] marks a member that may be omitted but not sent as null (API.md "Limits").
/// <summary>The provider document of API.md: the body of register, heartbeat and unregister.</summary>
public sealed class ProviderDocument
{
    /// <summary>The application name, e.g. <c>provider_test</c>.</summary>
    [JsonPropertyName("application")]
    public required string Application { get; init; }

    /// <summary>The protocol served, e.g. <c>http</c>.</summary>
    [JsonPropertyName("protocol")]
    public required string Protocol { get; init; }

    /// <summary>Where the instance serves: <c>host:port</c>.</summary>
    [JsonPropertyName("addr")]
    public required string Addr { get; init; }

    /// <summary>String metadata that subscriptions match on; may be omitted.</summary>
    [JsonPropertyName("meta")]
    [DisallowNull]
    public IReadOnlyDictionary<string, string>? Meta { get; init; }
}

/// <summary>The answer to register and heartbeat: the provider document plus its lease.</summary>
public sealed class LeaseDocument
{
    /// <summary>The application name.</summary>
    [JsonPropertyName("application")]
    public required string Application { get; init; }

    /// <summary>The protocol.</summary>
    [JsonPropertyName("protocol")]
    public required string Protocol { get; init; }

    /// <summary>The address.</summary>
    [JsonPropertyName("addr")]
    public required string Addr { get; init; }

    /// <summary>The stored metadata.</summary>
    [JsonPropertyName("meta")]
    public required IReadOnlyDictionary<string, string> Meta { get; init; }

    /// <summary>The lease granted, in seconds.</summary>
    [JsonPropertyName("ttl")]
    public required int Ttl { get; init; }

    /// <summary>When the lease runs out unless renewed (RFC 3339, UTC).</summary>
    [JsonPropertyName("expires")]
    public required DateTime Expires { get; init; }

    /// <summary>How the registry probes the instance (register answers of probe registrations only).</summary>
    [JsonPropertyName("probe")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ProbeDocument? Probe { get; init; }
}

/// <summary>The <c>probe</c> member of a register answer: how the registry probes the instance.</summary>
public sealed class ProbeDocument
{
    /// <summary><c>http</c>, <c>https</c> or <c>tcp</c>.</summary>
    [JsonPropertyName("kind")]
    public required string Kind { get; init; }

    /// <summary>The path requested (http and https only).</summary>
    [JsonPropertyName("path")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Path { get; init; }

    /// <summary>Seconds between probes.</summary>
    [JsonPropertyName("interval")]
    public required int Interval { get; init; }
}

/// <summary>One entry of the subscription document.</summary>
public sealed class SubscribeEntryDocument
{
    /// <summary>The application subscribed to.</summary>
    [JsonPropertyName("provider")]
    public required string Provider { get; init; }

    /// <summary>The protocol wanted; absent matches any.</summary>
    [JsonPropertyName("protocol")]
    [DisallowNull]
    public string? Protocol { get; init; }

    /// <summary>Pairs an instance must carry (subset match); absent or empty matches all.</summary>
    [JsonPropertyName("meta")]
    [DisallowNull]
    public IReadOnlyDictionary<string, string>? Meta { get; init; }
}

/// <summary>The subscription document of API.md: the body of subscribe.</summary>
public sealed class SubscriptionDocument
{
    /// <summary>What to watch: the answer is the union of every entry's matches.</summary>
    [JsonPropertyName("subscribes")]
    public required IReadOnlyList<SubscribeEntryDocument> Subscribes { get; init; }
}

/// <summary>The answer to a subscription (serialised by hand in canonical form; this type documents it).</summary>
public sealed class AnswerDocument
{
    /// <summary>The content hash of the endpoints; send it back as <c>version</c> to long-poll.</summary>
    [JsonPropertyName("version")]
    public required string Version { get; init; }

    /// <summary>The matching instances, sorted by (application, protocol, addr) byte-wise.</summary>
    [JsonPropertyName("endpoints")]
    public required IReadOnlyList<ProviderDocument> Endpoints { get; init; }
}

/// <summary>The applications registered now.</summary>
public sealed class ServicesDocument
{
    /// <summary>One row per application, sorted by name.</summary>
    [JsonPropertyName("services")]
    public required IReadOnlyList<ServiceSummary> Services { get; init; }
}

/// <summary>An application and how many instances it has.</summary>
public sealed class ServiceSummary
{
    /// <summary>The application name.</summary>
    [JsonPropertyName("application")]
    public required string Application { get; init; }

    /// <summary>The number of registered instances.</summary>
    [JsonPropertyName("instances")]
    public required int Instances { get; init; }
}
