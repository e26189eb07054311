using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
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
/// <remarks>
/// The endpoints are held in segments whose ends the content decides: a segment ends after an
/// endpoint whose key hashes to a boundary (one in <see cref="BoundaryEvery"/>), or at
/// <see cref="MaxSegment"/> endpoints. An instance changed in an application of thousands then
/// changes one segment: it alone is serialised and hashed again, the others are shared with the
/// previous fragment, and no copy of the whole fragment is made (which was a large-object-heap
/// array per change). Because the ends depend on the content alone, so does the hash, which is
/// computed from the segments' hashes: equal on every node, across restarts, however the
/// fragment was arrived at.
/// </remarks>
internal sealed class Fragment
{
    public static readonly Fragment Empty = new([], 0);

    /// <summary>One endpoint in this many (by its key's hash) ends a segment: about 15 KB each for endpoints of ~480 B.</summary>
    private const uint BoundaryEvery = 32;

    /// <summary>A segment ends here whatever its keys, so none reaches the large object heap (~60 KB at ~480 B an endpoint).</summary>
    private const int MaxSegment = 128;

    // Non-ASCII meta stays readable; the output is JSON for APIs, never embedded in HTML.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private readonly Segment[] _segments;

    private Fragment(Segment[] segments, int count)
    {
        _segments = segments;
        Count = count;
        Parts = Array.ConvertAll(segments, segment => segment.Bytes);
        Length = Math.Max(0, segments.Length - 1);
        foreach (var segment in segments)
        {
            Length += segment.Bytes.Length;
        }

        if (segments.Length == 0)
        {
            Hash = [];
            return;
        }

        const int HashSize = SHA256.HashSizeInBytes;
        var hashes = new byte[segments.Length * HashSize];
        for (var i = 0; i < segments.Length; i++)
        {
            segments[i].Hash.CopyTo(hashes, i * HashSize);
        }

        Hash = SHA256.HashData(hashes);
    }

    /// <summary>The endpoint objects, each part comma-separated inside, without the array's brackets; none when none matches.</summary>
    public byte[][] Parts { get; }

    public int Count { get; }

    /// <summary>The length of the parts joined by commas.</summary>
    public long Length { get; }

    /// <summary>SHA-256 of the segments' SHA-256s in order (what versions are made of); empty when none matches.</summary>
    public byte[] Hash { get; }

    /// <summary>
    /// Counts this fragment as kept by one more holder: adds to <paramref name="bytes"/> the segments no holder kept
    /// until now, so a segment shared by many fragments is counted once. Under the caller's lock, as <see cref="Release"/>.
    /// </summary>
    public void Hold(ref long bytes)
    {
        foreach (var segment in _segments)
        {
            if (segment.Holders++ == 0)
            {
                bytes += segment.Bytes.Length;
            }
        }
    }

    /// <summary>Undoes one <see cref="Hold"/>: takes from <paramref name="bytes"/> the segments no holder keeps any more.</summary>
    public void Release(ref long bytes)
    {
        foreach (var segment in _segments)
        {
            if (--segment.Holders == 0)
            {
                bytes -= segment.Bytes.Length;
            }
        }
    }

    /// <summary>
    /// The snapshot's instances that match any of the entries (all for one provider), in the
    /// snapshot's order. A segment that <paramref name="previous"/> already holds with the same
    /// instances at the same revisions (so with the same meta) is taken from it rather than
    /// serialised again: one registration to an application of thousands costs one segment.
    /// Segments of <paramref name="donor"/> (another selection of the same application) are taken
    /// the same way, so selections written differently that match the same instances share their
    /// bytes, however many there are.
    /// </summary>
    public static Fragment Compute(ApplicationSnapshot? snapshot, IReadOnlyList<SubscriptionEntry> entries, Fragment? previous = null, Fragment? donor = null)
    {
        if (snapshot is null)
        {
            return Empty;
        }

        // An entry with no protocol and no meta selects them all: then no instance is read.
        var everyOne = entries.Any(e => e.Protocol is null && e.Meta.Count == 0);
        var instances = new List<Instance>(snapshot.Count);
        foreach (var instance in snapshot.Instances)
        {
            if (everyOne || MatchesAny(entries, instance))
            {
                instances.Add(instance);
            }
        }

        if (instances.Count == 0)
        {
            return Empty;
        }

        var before = (previous ?? Empty)._segments;
        var offered = (donor ?? Empty)._segments;
        var segments = new List<Segment>(before.Length + 1);
        var all = CollectionsMarshal.AsSpan(instances);
        ArrayBufferWriter<byte>? buffer = null;
        var (reused, donated) = (0, 0);
        var (p, d) = (0, 0);
        for (var start = 0; start < all.Length;)
        {
            if (Reuse(before, ref p, all[start..]) is { } kept)
            {
                start += kept.Count;
                segments.Add(kept);
                reused++;
                continue;
            }

            if (Reuse(offered, ref d, all[start..]) is { } shared)
            {
                start += shared.Count;
                segments.Add(shared);
                donated++;
                continue;
            }

            var end = start + 1;
            while (end < all.Length && end - start < MaxSegment && !EndsSegment(all[end - 1].Key))
            {
                end++;
            }

            segments.Add(Segment.Serialise(all[start..end], buffer ??= new ArrayBufferWriter<byte>(16 * 1024)));
            start = end;
        }

        return reused == before.Length && reused == segments.Count ? previous!
            : donated == offered.Length && donated == segments.Count ? donor!
            : new Fragment([.. segments], instances.Count);
    }

    /// <summary>
    /// The segment of <paramref name="segments"/> that <paramref name="rest"/> begins with, if any. Both are in key
    /// order: <paramref name="next"/> walks the segments alongside the instances.
    /// </summary>
    private static Segment? Reuse(Segment[] segments, ref int next, ReadOnlySpan<Instance> rest)
    {
        while (next < segments.Length && ApplicationSnapshot.Compare(segments[next].First, rest[0].Key) < 0)
        {
            next++;
        }

        return next < segments.Length && segments[next].Continues(rest) ? segments[next++] : null;
    }

    /// <summary>Whether the entry selects the instance (its protocol, and its meta as a subset).</summary>
    internal static bool Matches(SubscriptionEntry entry, Instance instance) =>
        (entry.Protocol is null || string.Equals(entry.Protocol, instance.Key.Protocol, StringComparison.Ordinal))
        && instance.Meta.Contains(entry.Meta);

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

    /// <summary>Whether a segment ends after the endpoint of this key: FNV-1a of its protocol and address, the same on every node.</summary>
    private static bool EndsSegment(InstanceKey key)
    {
        var hash = 2166136261u;
        foreach (var c in key.Protocol)
        {
            hash = (hash ^ c) * 16777619u;
        }

        hash = (hash ^ ' ') * 16777619u;
        foreach (var c in key.Addr)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return hash % BoundaryEvery == 0;
    }

    /// <summary>A run of endpoints serialised, with the instances they were made from.</summary>
    private sealed class Segment(Instance[] instances, byte[] bytes)
    {
        public byte[] Bytes { get; } = bytes;

        public byte[] Hash { get; } = SHA256.HashData(bytes);

        /// <summary>How many held fragments include it (see <see cref="Hold"/>); guarded by the subscription hub's lock.</summary>
        public int Holders { get; set; }

        public InstanceKey First => instances[0].Key;

        public int Count => instances.Length;

        /// <summary>Whether its last key ends a segment whatever follows (computed once, not at every change that reuses it).</summary>
        private bool EndsByKey { get; } = EndsSegment(instances[^1].Key);

        /// <summary>
        /// Whether <paramref name="rest"/> (the instances from a segment's start on) begins with
        /// exactly its instances, at the same revisions, and a segment would end after them there
        /// too: so the same segment, found without reading each instance's key again. Inside it
        /// none ended one; after it, its last key still does, or it was as long as one may be, or
        /// it is the last in both.
        /// </summary>
        public bool Continues(ReadOnlySpan<Instance> rest)
        {
            if (rest.Length < instances.Length
                || (rest.Length > instances.Length && instances.Length < MaxSegment && !EndsByKey))
            {
                return false;
            }

            for (var i = 0; i < instances.Length; i++)
            {
                if (!ReferenceEquals(rest[i], instances[i]) && (rest[i].Revision != instances[i].Revision || rest[i].Key != instances[i].Key))
                {
                    return false;
                }
            }

            return true;
        }

        public static Segment Serialise(ReadOnlySpan<Instance> run, ArrayBufferWriter<byte> buffer)
        {
            buffer.ResetWrittenCount();
            using var writer = new Utf8JsonWriter(buffer, WriterOptions);
            for (var i = 0; i < run.Length; i++)
            {
                if (i > 0)
                {
                    buffer.Write(","u8);
                }

                // One JSON value per reset: the commas between them are the array's, written above.
                writer.Reset(buffer);
                WriteEndpoint(writer, run[i]);
                writer.Flush();
            }

            return new Segment(run.ToArray(), buffer.WrittenSpan.ToArray());
        }

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
    private static readonly byte[] HeadStart = "{\"version\":\""u8.ToArray();
    private static readonly byte[] HeadEnd = "\",\"endpoints\":["u8.ToArray();
    private static readonly byte[] Tail = "]}"u8.ToArray();

    /// <summary>Bytes written between flushes of a large answer.</summary>
    private const int FlushEvery = 64 * 1024;

    private readonly byte[] _head;

    /// <summary>Each with endpoints: the answer holds its fragments, not a copy of their parts.</summary>
    private readonly Fragment[] _fragments;

    private Answer(string version, Fragment[] fragments)
    {
        Version = version;
        ETag = $"\"{version}\"";
        _head = new byte[HeadStart.Length + version.Length + HeadEnd.Length];
        HeadStart.CopyTo(_head, 0);
        Encoding.ASCII.GetBytes(version, _head.AsSpan(HeadStart.Length));
        HeadEnd.CopyTo(_head, HeadStart.Length + version.Length);
        _fragments = fragments;
        long length = _head.Length + Tail.Length + Math.Max(0, fragments.Length - 1);
        foreach (var fragment in fragments)
        {
            EndpointCount += fragment.Count;
            length += fragment.Length;
        }

        ContentLength = length;
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
    public static Answer Compose(Fragment[] fragments)
    {
        var matched = 0;
        foreach (var fragment in fragments)
        {
            matched += fragment.Count > 0 ? 1 : 0;
        }

        var parts = matched == fragments.Length ? fragments : Array.FindAll(fragments, f => f.Count > 0);
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
        return new Answer(Convert.ToHexStringLower(digest[..10]), parts);
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
        for (var i = 0; i < _fragments.Length; i++)
        {
            var parts = _fragments[i].Parts;
            for (var j = 0; j < parts.Length; j++)
            {
                if (i > 0 || j > 0)
                {
                    body.Write(","u8);
                }

                for (var offset = 0; offset < parts[j].Length; offset += FlushEvery)
                {
                    var chunk = parts[j].AsMemory(offset, Math.Min(FlushEvery, parts[j].Length - offset));
                    body.Write(chunk.Span);
                    unflushed += chunk.Length;
                    if (unflushed >= FlushEvery)
                    {
                        await turn.FlushAsync(body.FlushAsync(cancellationToken));
                        unflushed = 0;
                    }
                }
            }
        }

        body.Write(Tail);
        await turn.FlushAsync(body.FlushAsync(cancellationToken));
    }

    private void WriteAll(PipeWriter body)
    {
        body.Write(_head);
        for (var i = 0; i < _fragments.Length; i++)
        {
            var parts = _fragments[i].Parts;
            for (var j = 0; j < parts.Length; j++)
            {
                if (i > 0 || j > 0)
                {
                    body.Write(","u8);
                }

                body.Write(parts[j]);
            }
        }

        body.Write(Tail);
    }
}
