using System.Buffers;
using System.IO.Pipelines;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Registry.Model;
using Registry.State;

namespace Registry.Subscription;

/// <summary>
/// What one application contributes to the answers of the subscriptions that name it with the
/// same entries: its matching endpoints, serialised once per change and shared by every
/// answer that includes them (a big provider in 500 different subscriptions is held and
/// serialised once, not 500 times).
/// </summary>
internal sealed class Fragment
{
    public static readonly Fragment Empty = new([], 0);

    // Non-ASCII meta stays readable; the output is JSON for APIs, never embedded in HTML.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private Fragment(byte[] endpoints, int count)
    {
        Endpoints = endpoints;
        Count = count;
        Hash = count == 0 ? [] : SHA256.HashData(endpoints);
    }

    /// <summary>The endpoint objects, comma-separated, without the array's brackets; empty when none matches.</summary>
    public byte[] Endpoints { get; }

    public int Count { get; }

    /// <summary>SHA-256 of <see cref="Endpoints"/> (what versions are made of); empty when none matches.</summary>
    public byte[] Hash { get; }

    /// <summary>The snapshot's instances that match any of the entries (all for one provider), in the snapshot's order.</summary>
    public static Fragment Compute(ApplicationSnapshot? snapshot, IReadOnlyList<SubscriptionEntry> entries)
    {
        if (snapshot is null)
        {
            return Empty;
        }

        var buffer = new ArrayBufferWriter<byte>(256);
        var count = 0;
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            // Written as an array so the writer places the commas; the brackets are cut below.
            writer.WriteStartArray();
            foreach (var instance in snapshot.Instances)
            {
                if (entries.Any(entry => Matches(entry, instance)))
                {
                    WriteEndpoint(writer, instance);
                    count++;
                }
            }

            writer.WriteEndArray();
        }

        return count == 0 ? Empty : new Fragment(buffer.WrittenSpan[1..^1].ToArray(), count);
    }

    /// <summary>Whether the entry selects the instance (its protocol, and its meta as a subset).</summary>
    internal static bool Matches(SubscriptionEntry entry, Instance instance) =>
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
}

/// <summary>
/// The answer to a subscription: its applications' fragments in ordinal order (each sorted,
/// and every endpoint of a fragment has its application, so the concatenation is the union
/// sorted by (application, protocol, addr)), composed when it is written rather than copied.
/// The version is a hash of the fragments' hashes; since an answer splits into fragments by
/// application, that is a function of its content alone: equal on every node, across
/// restarts, whatever the subscription that produced it, and computed without reading the
/// endpoints again.
/// </summary>
internal sealed class Answer
{
    private static readonly byte[] Tail = "]}"u8.ToArray();

    /// <summary>Bytes written between flushes of a large answer.</summary>
    private const int FlushEvery = 64 * 1024;

    private readonly byte[] _head;
    private readonly byte[][] _parts;

    private Answer(string version, byte[][] parts, int endpointCount)
    {
        Version = version;
        ETag = $"\"{version}\"";
        _head = Encoding.ASCII.GetBytes($"{{\"version\":\"{version}\",\"endpoints\":[");
        _parts = parts;
        EndpointCount = endpointCount;
        ContentLength = _head.Length + Tail.Length + parts.Sum(p => (long)p.Length) + Math.Max(0, parts.Length - 1);
        ComputedAt = System.Diagnostics.Stopwatch.GetTimestamp();
    }

    public string Version { get; }

    /// <summary>The version as an HTTP entity tag (quoted).</summary>
    public string ETag { get; }

    public int EndpointCount { get; }

    /// <summary>The length of the UTF-8 JSON answer document.</summary>
    public long ContentLength { get; }

    /// <summary>When the answer was composed (a <see cref="System.Diagnostics.Stopwatch"/> timestamp): the start of its delivery delay.</summary>
    public long ComputedAt { get; }

    /// <summary>Composes the answer from its applications' fragments, given in ordinal order of application.</summary>
    public static Answer Compose(IEnumerable<Fragment> fragments)
    {
        var parts = fragments.Where(f => f.Count > 0).ToArray();
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var fragment in parts)
        {
            hash.AppendData(fragment.Hash);
        }

        var version = Convert.ToHexStringLower(hash.GetHashAndReset().AsSpan(0, 10));
        return new Answer(version, parts.Select(f => f.Endpoints).ToArray(), parts.Sum(f => f.Count));
    }

    /// <summary>
    /// Writes the answer document fragment by fragment: one flush for a small answer (one
    /// send), and a flush every <see cref="FlushEvery"/> bytes for a large one, so hundreds of
    /// consumers woken at once do not each hold a whole copy in the server's buffers (the
    /// flush waits while the socket drains).
    /// </summary>
    public async ValueTask WriteAsync(PipeWriter body, CancellationToken cancellationToken)
    {
        body.Write(_head);
        long unflushed = _head.Length;
        for (var i = 0; i < _parts.Length; i++)
        {
            if (i > 0)
            {
                body.Write(","u8);
            }

            for (var offset = 0; offset < _parts[i].Length; offset += FlushEvery)
            {
                var chunk = _parts[i].AsMemory(offset, Math.Min(FlushEvery, _parts[i].Length - offset));
                body.Write(chunk.Span);
                unflushed += chunk.Length;
                if (unflushed >= FlushEvery)
                {
                    await body.FlushAsync(cancellationToken);
                    unflushed = 0;
                }
            }
        }

        body.Write(Tail);
        await body.FlushAsync(cancellationToken);
    }
}
