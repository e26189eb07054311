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
    public static readonly Fragment Empty = new([], [], []);

    // Non-ASCII meta stays readable; the output is JSON for APIs, never embedded in HTML.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The instances serialised, in order, and where each one's object ends in <see cref="Endpoints"/>.</summary>
    private readonly Instance[] _instances;
    private readonly int[] _ends;

    private Fragment(byte[] endpoints, Instance[] instances, int[] ends)
    {
        Endpoints = endpoints;
        _instances = instances;
        _ends = ends;
        Hash = instances.Length == 0 ? [] : SHA256.HashData(endpoints);
    }

    /// <summary>The endpoint objects, comma-separated, without the array's brackets; empty when none matches.</summary>
    public byte[] Endpoints { get; }

    public int Count => _instances.Length;

    /// <summary>SHA-256 of <see cref="Endpoints"/> (what versions are made of); empty when none matches.</summary>
    public byte[] Hash { get; }

    /// <summary>
    /// The snapshot's instances that match any of the entries (all for one provider), in the
    /// snapshot's order. An instance that <paramref name="previous"/> already holds at the same
    /// revision (so with the same meta) is copied from it rather than serialised again: one
    /// registration to an application of thousands costs one endpoint's serialisation and a copy.
    /// </summary>
    public static Fragment Compute(ApplicationSnapshot? snapshot, IReadOnlyList<SubscriptionEntry> entries, Fragment? previous = null)
    {
        if (snapshot is null)
        {
            return Empty;
        }

        var instances = new List<Instance>(snapshot.Count);
        foreach (var instance in snapshot.Instances)
        {
            if (MatchesAny(entries, instance))
            {
                instances.Add(instance);
            }
        }

        if (instances.Count == 0)
        {
            return Empty;
        }

        // Each endpoint's bytes: a range of the previous fragment's (copied) or of the newly
        // serialised ones. Sized first, so the fragment is allocated once at its exact length:
        // a big application's fragment is on the large object heap, and a change should not
        // allocate and copy it twice.
        previous ??= Empty;
        var fresh = new ArrayBufferWriter<byte>(256);
        using var writer = new Utf8JsonWriter(fresh, WriterOptions);
        var sources = new (bool Fresh, int Start, int Length)[instances.Count];
        var length = instances.Count - 1; // the commas
        var p = 0;
        for (var i = 0; i < instances.Count; i++)
        {
            // Both are in key order: walk the previous fragment alongside.
            var instance = instances[i];
            while (p < previous.Count && ApplicationSnapshot.Compare(previous._instances[p].Key, instance.Key) < 0)
            {
                p++;
            }

            if (p < previous.Count && previous._instances[p].Revision == instance.Revision && previous._instances[p].Key == instance.Key)
            {
                var start = p == 0 ? 0 : previous._ends[p - 1] + 1;
                sources[i] = (false, start, previous._ends[p] - start);
            }
            else
            {
                var start = fresh.WrittenCount;
                writer.Reset(fresh);
                WriteEndpoint(writer, instance);
                writer.Flush();
                sources[i] = (true, start, fresh.WrittenCount - start);
            }

            length += sources[i].Length;
        }

        if (fresh.WrittenCount == 0 && instances.Count == previous.Count)
        {
            // Every endpoint copied, and none left out: the same fragment.
            return previous;
        }

        var endpoints = GC.AllocateUninitializedArray<byte>(length);
        var ends = new int[instances.Count];
        var at = 0;
        for (var i = 0; i < sources.Length; i++)
        {
            if (i > 0)
            {
                endpoints[at++] = (byte)',';
            }

            var (isFresh, start, count) = sources[i];
            (isFresh ? fresh.WrittenSpan : previous.Endpoints).Slice(start, count).CopyTo(endpoints.AsSpan(at));
            at += count;
            ends[i] = at;
        }

        return new Fragment(endpoints, [.. instances], ends);
    }

    private static bool MatchesAny(IReadOnlyList<SubscriptionEntry> entries, Instance instance)
    {
        for (var i = 0; i < entries.Count; i++)
        {
            if (Matches(entries[i], instance))
            {
                return true;
            }
        }

        return false;
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
        // SHA-256 of the fragments' hashes one after another, in one call: a change to a big
        // application recomposes every answer that includes it, on the loader's thread.
        const int HashSize = SHA256.HashSizeInBytes;
        Span<byte> hashes = parts.Length <= 8 ? stackalloc byte[8 * HashSize] : new byte[parts.Length * HashSize];
        for (var i = 0; i < parts.Length; i++)
        {
            parts[i].Hash.CopyTo(hashes[(i * HashSize)..]);
        }

        Span<byte> digest = stackalloc byte[HashSize];
        SHA256.HashData(hashes[..(parts.Length * HashSize)], digest);
        var version = Convert.ToHexStringLower(digest[..10]);
        return new Answer(version, parts.Select(f => f.Endpoints).ToArray(), parts.Sum(f => f.Count));
    }

    /// <summary>
    /// Writes the answer document fragment by fragment: one flush for a small answer (one
    /// send), and for a large one a flush every <see cref="FlushEvery"/> bytes, in a turn of
    /// <paramref name="writers"/>, so hundreds of consumers woken at once neither hold a whole
    /// copy each in the server's buffers (the flush waits while the socket drains) nor hold
    /// up the node's other replies.
    /// </summary>
    public async ValueTask WriteAsync(PipeWriter body, AnswerWriters writers, CancellationToken cancellationToken)
    {
        if (ContentLength <= FlushEvery)
        {
            WriteAll(body);
            await body.FlushAsync(cancellationToken);
            return;
        }

        using var turn = await writers.EnterAsync(cancellationToken);
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
                    await turn.FlushAsync(body.FlushAsync(cancellationToken));
                    unflushed = 0;
                }
            }
        }

        body.Write(Tail);
        await turn.FlushAsync(body.FlushAsync(cancellationToken));
    }

    private void WriteAll(PipeWriter body)
    {
        body.Write(_head);
        for (var i = 0; i < _parts.Length; i++)
        {
            if (i > 0)
            {
                body.Write(","u8);
            }

            body.Write(_parts[i]);
        }

        body.Write(Tail);
    }
}
