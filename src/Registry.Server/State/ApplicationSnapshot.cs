// Over 300 lines on purpose: the chunked copy-on-write layout and its search and split helpers keep one set of private invariants.
using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Registry.Model;

namespace Registry.State;

/// <summary>
/// An immutable picture of one application's instances, sorted by (protocol, addr) byte-wise.
/// They are held in chunks of up to a few dozen, so a change copies the chunk it lands in and
/// the list of chunks, not every instance: an application of 10,000 instances changed by
/// each of a deploy's batches would otherwise be copied whole (80 KB) each time.
/// </summary>
internal sealed class ApplicationSnapshot
{
    /// <summary>Instances per chunk when one is built or split; a chunk grows to twice this before it splits.</summary>
    private const int ChunkSize = 64;

    private static readonly Comparison<Instance> ByKey = static (a, b) => Compare(a.Key, b.Key);

    /// <summary>Non-empty, each sorted, and in order: every key of a chunk sorts before the next chunk's.</summary>
    private readonly Instance[][] _chunks;

    // Only the loader loop reads these (one thread at a time), so the lazy caches need no lock.
    private DateTimeOffset? _earliestExpiry;
    private string? _contentDigest;

    public ApplicationSnapshot(string application, Instance[] instances)
        : this(application, Chunk(Sorted(instances)))
    {
    }

    private ApplicationSnapshot(string application, Instance[][] chunks)
    {
        Application = application;
        _chunks = chunks;
        foreach (var chunk in chunks)
        {
            Count += chunk.Length;
        }
    }

    public string Application { get; }

    public int Count { get; }

    /// <summary>The instances in order.</summary>
    public IEnumerable<Instance> Instances => _chunks.SelectMany(chunk => chunk);

    /// <summary>When the first of these leases runs out, as loaded.</summary>
    /// <remarks>
    /// Computed on first use, not per reload: a busy application is re-snapshotted for every
    /// batch that touches it, and scanning all its instances each time showed in profiles.
    /// </remarks>
    public DateTimeOffset EarliestExpiry => _earliestExpiry ??= Count == 0 ? DateTimeOffset.MaxValue : Instances.Min(i => i.ExpiresAt);

    /// <summary>
    /// SHA-256 (lowercase hex) of the (protocol, addr, revision) lines in key order, as
    /// <see cref="ContentDigestSql"/> computes it in the database: what the periodic
    /// consistency check compares, so any row that differs is found, whatever its revision.
    /// </summary>
    public string ContentDigest => _contentDigest ??= Digest();

    /// <summary>The database's side of <see cref="ContentDigest"/>, an aggregate over one application's rows of <c>instances</c>.</summary>
    public const string ContentDigestSql =
        "encode(sha256(convert_to(string_agg(protocol || ' ' || addr || ' ' || revision::text, E'\\n' ORDER BY protocol, addr), 'UTF8')), 'hex')";

    /// <summary>
    /// Whether the other snapshot shows consumers the same thing: the same keys at the same
    /// revisions. Decided from the whole content, never from a count and a maximum revision:
    /// revisions are drawn at statement time and commit in any order, so a row can arrive
    /// with a lower revision than one already loaded.
    /// </summary>
    public bool SameContentAs(ApplicationSnapshot? other)
    {
        if (other is null || other.Count != Count)
        {
            return false;
        }

        if (ReferenceEquals(other, this))
        {
            return true;
        }

        using var mine = Instances.GetEnumerator();
        using var theirs = other.Instances.GetEnumerator();
        while (mine.MoveNext() && theirs.MoveNext())
        {
            if (mine.Current.Revision != theirs.Current.Revision || Compare(mine.Current.Key, theirs.Current.Key) != 0)
            {
                return false;
            }
        }

        return true;
    }

    private string Digest()
    {
        if (Count == 0)
        {
            return "";
        }

        // One line per instance, encoded into a reused buffer: a large application is hashed at
        // each consistency check without a string per instance.
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = ArrayPool<byte>.Shared.Rent(1024);
        try
        {
            var first = true;
            foreach (var instance in Instances)
            {
                var key = instance.Key;
                var length = (first ? 0 : 1) + Encoding.UTF8.GetMaxByteCount(key.Protocol.Length + key.Addr.Length) + 2 + 20;
                if (length > buffer.Length)
                {
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = ArrayPool<byte>.Shared.Rent(length);
                }

                var written = 0;
                if (!first)
                {
                    buffer[written++] = (byte)'\n';
                }

                written += Encoding.UTF8.GetBytes(key.Protocol, buffer.AsSpan(written));
                buffer[written++] = (byte)' ';
                written += Encoding.UTF8.GetBytes(key.Addr, buffer.AsSpan(written));
                buffer[written++] = (byte)' ';
                instance.Revision.TryFormat(buffer.AsSpan(written), out var digits, default, CultureInfo.InvariantCulture);
                hash.AppendData(buffer, 0, written + digits);
                first = false;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    /// <summary>
    /// This snapshot with the given instances reloaded: each of <paramref name="reloaded"/> is
    /// replaced by its row in <paramref name="rows"/>, or removed when it has none (every row
    /// is for one of them). Only the chunks they fall in are rebuilt; the others are shared.
    /// </summary>
    public ApplicationSnapshot With(IReadOnlyCollection<InstanceKey> reloaded, Instance[] rows)
    {
        Array.Sort(rows, ByKey);
        if (_chunks.Length == 0)
        {
            return new ApplicationSnapshot(Application, Chunk(rows));
        }

        var edits = new Dictionary<int, Edit>();
        Edit EditOf(int chunk) => edits.TryGetValue(chunk, out var edit) ? edit : edits[chunk] = new Edit();
        foreach (var key in reloaded)
        {
            var chunk = ChunkFor(key);
            var index = BinarySearch(_chunks[chunk], key);
            if (index >= 0)
            {
                EditOf(chunk).Removed.Add(index);
            }
        }

        foreach (var row in rows)
        {
            EditOf(ChunkFor(row.Key)).Rows.Add(row); // in order, as rows are sorted
        }

        var chunks = new List<Instance[]>(_chunks.Length + edits.Count);
        var next = 0; // the next chunk to share unchanged
        foreach (var (index, edit) in edits.OrderBy(e => e.Key))
        {
            chunks.AddRange(_chunks.AsSpan(next, index - next));
            AddSplit(chunks, edit.Apply(_chunks[index]));
            next = index + 1;
        }

        chunks.AddRange(_chunks.AsSpan(next));
        return new ApplicationSnapshot(Application, chunks.ToArray());
    }

    public Instance? Find(InstanceKey key)
    {
        if (_chunks.Length == 0)
        {
            return null;
        }

        var chunk = _chunks[ChunkFor(key)];
        var index = BinarySearch(chunk, key);
        return index >= 0 ? chunk[index] : null;
    }

    /// <summary>The chunk that holds the key or would take it: the first whose last key is not smaller (else the last).</summary>
    private int ChunkFor(InstanceKey key)
    {
        int lo = 0, hi = _chunks.Length - 1;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (Compare(_chunks[mid][^1].Key, key) < 0)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }

    /// <summary>The index of the key, or the bitwise complement of where it would go.</summary>
    private static int BinarySearch(Instance[] instances, InstanceKey key)
    {
        int lo = 0, hi = instances.Length - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            var c = Compare(instances[mid].Key, key);
            if (c == 0)
            {
                return mid;
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

        return ~lo;
    }

    /// <summary>Byte-wise (protocol, addr) order, the order of <see cref="Instances"/>: every key here has this snapshot's application.</summary>
    public static int Compare(InstanceKey x, InstanceKey y)
    {
        var c = string.CompareOrdinal(x.Protocol, y.Protocol);
        return c != 0 ? c : string.CompareOrdinal(x.Addr, y.Addr);
    }

    private static Instance[] Sorted(Instance[] instances)
    {
        Array.Sort(instances, ByKey);
        return instances;
    }

    private static Instance[][] Chunk(Instance[] sorted)
    {
        var chunks = new List<Instance[]>(sorted.Length / ChunkSize + 1);
        AddSplit(chunks, sorted);
        return chunks.ToArray();
    }

    /// <summary>Adds a sorted run as one chunk, or as chunks of <see cref="ChunkSize"/> when it has outgrown one.</summary>
    private static void AddSplit(List<Instance[]> chunks, Instance[] run)
    {
        if (run.Length <= 2 * ChunkSize)
        {
            if (run.Length > 0)
            {
                chunks.Add(run);
            }

            return;
        }

        for (var start = 0; start < run.Length; start += ChunkSize)
        {
            chunks.Add(run[start..Math.Min(start + ChunkSize, run.Length)]);
        }
    }

    /// <summary>What changes in one chunk: the indices leaving it and the rows (sorted) entering it.</summary>
    private sealed class Edit
    {
        public List<int> Removed { get; } = [];

        public List<Instance> Rows { get; } = [];

        /// <summary>
        /// The chunk without the removed instances, merged with the rows (no row's key is among
        /// the kept): each row's place is found by binary search and the kept runs between are
        /// copied, so the chunk's instances are not compared one by one.
        /// </summary>
        public Instance[] Apply(Instance[] chunk)
        {
            // A key listed twice is removed once.
            var removed = new bool[chunk.Length];
            var kept = chunk.Length;
            foreach (var index in Removed)
            {
                if (!removed[index])
                {
                    removed[index] = true;
                    kept--;
                }
            }

            var merged = new Instance[kept + Rows.Count];
            int source = 0, target = 0;
            foreach (var row in Rows)
            {
                var at = BinarySearch(chunk, row.Key);
                CopyKept(at < 0 ? ~at : at);
                merged[target++] = row;
            }

            CopyKept(chunk.Length);
            return merged;

            // Copies the chunk's instances before index `end`, leaving out the removed ones.
            void CopyKept(int end)
            {
                for (; source < end; source++)
                {
                    if (!removed[source])
                    {
                        merged[target++] = chunk[source];
                    }
                }
            }
        }
    }
}

