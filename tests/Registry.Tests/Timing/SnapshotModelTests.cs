using Registry.Model;
using Registry.State;
using Xunit.Abstractions;

namespace Registry.Tests.Timing;

/// <summary>
/// <see cref="ApplicationSnapshot.With"/> against a model: a sorted dictionary with the same
/// ordinal (protocol, addr) order, driven by seeded random reloads (adds, replacements,
/// removals, keys reloaded without a row) across chunk splits. The seed is printed, so a
/// failure can be replayed.
/// </summary>
public sealed class SnapshotModelTests(ITestOutputHelper output)
{
    private static readonly Comparer<(string Protocol, string Addr)> Ordinal = Comparer<(string Protocol, string Addr)>.Create(
        static (x, y) => string.CompareOrdinal(x.Protocol, y.Protocol) is var c && c != 0 ? c : string.CompareOrdinal(x.Addr, y.Addr));

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(20261127)]
    public void ReloadsAgreeWithASortedDictionary(int seed)
    {
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var model = new SortedDictionary<(string Protocol, string Addr), Instance>(Ordinal);
        var snapshot = new ApplicationSnapshot("app", []);
        var revision = 0L;

        for (var step = 0; step < 300; step++)
        {
            // Batches from one key to a few hundred, so chunks are built, grow past twice their size and split.
            var size = random.Next(4) == 0 ? random.Next(100, 400) : random.Next(1, 12);
            var reloaded = new HashSet<InstanceKey>();
            var rows = new List<Instance>();
            for (var i = 0; i < size; i++)
            {
                var key = Key(random, model, step);
                if (!reloaded.Add(key))
                {
                    continue;
                }

                // Two in three reloaded keys have a row (added or replaced); the others are gone.
                if (random.Next(3) > 0)
                {
                    var instance = new Instance(key, Meta.Empty, random.Next(1, 60), DateTimeOffset.UnixEpoch.AddSeconds(random.Next(1_000_000)), ++revision);
                    rows.Add(instance);
                    model[(key.Protocol, key.Addr)] = instance;
                }
                else
                {
                    model.Remove((key.Protocol, key.Addr));
                }
            }

            // Rows in any order, as the database returns them.
            var shuffled = rows.ToArray();
            random.Shuffle(shuffled);
            var before = snapshot;
            var beforeInstances = before.Instances.ToArray();
            snapshot = snapshot.With(reloaded, shuffled);

            Assert.Equal(model.Values, snapshot.Instances);
            Assert.Equal(model.Count, snapshot.Count);
            Assert.Equal(model.Count == 0 ? DateTimeOffset.MaxValue : model.Values.Min(i => i.ExpiresAt), snapshot.EarliestExpiry);
            foreach (var key in reloaded)
            {
                Assert.Equal(model.GetValueOrDefault((key.Protocol, key.Addr)), snapshot.Find(key));
            }

            // Immutable: the snapshot reloaded from is unchanged.
            Assert.Equal(beforeInstances, before.Instances);
        }
    }

    /// <summary>Mostly keys already held (to replace or remove), otherwise new ones; some share a prefix to test ordinal order.</summary>
    private static InstanceKey Key(Random random, SortedDictionary<(string Protocol, string Addr), Instance> model, int step)
    {
        if (model.Count > 0 && random.Next(2) == 0)
        {
            var (protocol, addr) = model.Keys.ElementAt(random.Next(model.Count));
            return new InstanceKey("app", protocol, addr);
        }

        var protocols = new[] { "grpc", "http", "https", "h2", "HTTP" };
        return new InstanceKey("app", protocols[random.Next(protocols.Length)], $"10.{step % 7}.{random.Next(256)}.{random.Next(256)}:{random.Next(1, 9) * 10}");
    }
}
