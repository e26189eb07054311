using System.Buffers;
using System.Security.Cryptography;
using System.Text.Encodings.Web;
using System.Text.Json;
using Registry.Model;
using Registry.State;

namespace Registry.Subscription;

/// <summary>
/// The answer to a subscription, serialised once and shared by every consumer of it.
/// The version is a hash of the canonical endpoint list, so equal content has an equal
/// version on every node and across restarts.
/// </summary>
internal sealed class Answer
{
    private Answer(string version, byte[] body, int endpointCount)
    {
        Version = version;
        ETag = $"\"{version}\"";
        Body = body;
        EndpointCount = endpointCount;
        ComputedAt = System.Diagnostics.Stopwatch.GetTimestamp();
    }

    public string Version { get; }

    /// <summary>The version as an HTTP entity tag (quoted).</summary>
    public string ETag { get; }

    /// <summary>The UTF-8 JSON answer document.</summary>
    public byte[] Body { get; }

    public int EndpointCount { get; }

    /// <summary>When the answer was computed (a <see cref="System.Diagnostics.Stopwatch"/> timestamp): the start of its delivery delay.</summary>
    public long ComputedAt { get; }

    /// <summary>
    /// Builds the answer for the union of the entries' matches: each instance once, sorted by
    /// (application, protocol, addr) byte-wise.
    /// </summary>
    // Non-ASCII meta stays readable; the output is JSON for APIs, never embedded in HTML.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static Answer Compute(RegistryState state, IReadOnlyList<SubscriptionEntry> entries)
    {
        var endpoints = new ArrayBufferWriter<byte>(256);
        var count = 0;
        using (var writer = new Utf8JsonWriter(endpoints, WriterOptions))
        {
            writer.WriteStartArray();
            // Entries are grouped by provider in ordinal order; each snapshot is sorted, so
            // walking them in that order yields the answer sorted without a further sort.
            foreach (var group in entries.GroupBy(e => e.Provider, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal))
            {
                var snapshot = state.Get(group.Key);
                if (snapshot is null)
                {
                    continue;
                }

                foreach (var instance in snapshot.Instances)
                {
                    if (group.Any(entry => Matches(entry, instance)))
                    {
                        WriteEndpoint(writer, instance);
                        count++;
                    }
                }
            }

            writer.WriteEndArray();
        }

        var version = VersionOf(endpoints.WrittenSpan);
        var body = new ArrayBufferWriter<byte>(endpoints.WrittenCount + 64);
        body.Write("{\"version\":\""u8);
        body.Write(System.Text.Encoding.ASCII.GetBytes(version));
        body.Write("\",\"endpoints\":"u8);
        body.Write(endpoints.WrittenSpan);
        body.Write("}"u8);
        return new Answer(version, body.WrittenSpan.ToArray(), count);
    }

    private static bool Matches(SubscriptionEntry entry, Instance instance) =>
        (entry.Protocol is null || string.Equals(entry.Protocol, instance.Key.Protocol, StringComparison.Ordinal))
        && instance.Meta.Contains(entry.Meta);

    private static void WriteEndpoint(Utf8JsonWriter writer, Instance instance)
    {
        writer.WriteStartObject();
        writer.WriteString("application"u8, instance.Key.Application);
        writer.WriteString("protocol"u8, instance.Key.Protocol);
        writer.WriteString("addr"u8, instance.Key.Addr);
        writer.WriteStartObject("meta"u8);
        foreach (var (key, value) in instance.Meta.Pairs)
        {
            writer.WriteString(key, value);
        }

        writer.WriteEndObject();
        writer.WriteEndObject();
    }

    /// <summary>20 hex digits (80 bits) of SHA-256 over the canonical endpoint list.</summary>
    private static string VersionOf(ReadOnlySpan<byte> canonicalEndpoints)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(canonicalEndpoints, hash);
        return Convert.ToHexStringLower(hash[..10]);
    }
}
