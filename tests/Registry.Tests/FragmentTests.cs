using Registry.Model;
using Registry.State;
using Registry.Subscription;

namespace Registry.Tests;

/// <summary>A fragment recomputed from the previous one is byte for byte the fragment computed afresh.</summary>
public sealed class FragmentTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void AFragmentBuiltOnThePreviousOneEqualsOneBuiltAfresh(int seed)
    {
        var random = new Random(seed);
        var entries = new[] { new SubscriptionEntry("app", null, Meta.Empty) };
        var zoned = new[] { new SubscriptionEntry("app", "http", Meta.From([new("zone", "a")])) };
        var rows = new SortedDictionary<string, Instance>(StringComparer.Ordinal);
        var revision = 0L;
        Fragment all = Fragment.Empty, some = Fragment.Empty;
        for (var step = 0; step < 300; step++)
        {
            // Register, re-register with other meta, or remove a handful of a few dozen addresses.
            for (var change = random.Next(1, 5); change > 0; change--)
            {
                var addr = $"10.0.0.{random.Next(40)}:80";
                if (random.Next(4) == 0)
                {
                    rows.Remove(addr);
                }
                else
                {
                    var meta = Meta.From([new("zone", random.Next(2) == 0 ? "a" : "b"), new("note", $"\"é\\{random.Next(3)}")]);
                    rows[addr] = new Instance(new InstanceKey("app", random.Next(3) == 0 ? "grpc" : "http", addr), meta, 30, DateTimeOffset.UnixEpoch, ++revision);
                }
            }

            var snapshot = new ApplicationSnapshot("app", rows.Values.ToArray());
            all = Fragment.Compute(snapshot, entries, all);
            some = Fragment.Compute(snapshot, zoned, some);

            var fresh = Fragment.Compute(snapshot, entries);
            Assert.Equal(fresh.Endpoints, all.Endpoints);
            Assert.Equal(fresh.Hash, all.Hash);
            Assert.Equal(fresh.Count, all.Count);
            Assert.Equal(Fragment.Compute(snapshot, zoned).Endpoints, some.Endpoints);
        }
    }
}
