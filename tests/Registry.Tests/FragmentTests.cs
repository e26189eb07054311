using Registry.Model;
using Registry.State;
using Registry.Subscription;

namespace Registry.Tests;

/// <summary>A fragment recomputed from the previous one is byte for byte the fragment computed afresh.</summary>
public sealed class FragmentTests
{
    [Theory]
    [InlineData(1, 40)]
    [InlineData(2, 40)]
    [InlineData(3, 1000)]
    [InlineData(4, 1000)]
    public void AFragmentBuiltOnThePreviousOneEqualsOneBuiltAfresh(int seed, int addresses)
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
                var addr = $"10.0.{random.Next(addresses) / 250}.{random.Next(addresses) % 250}:80";
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
            Assert.Equal(Text(fresh), Text(all));
            Assert.Equal(fresh.Hash, all.Hash);
            Assert.Equal(fresh.Count, all.Count);
            Assert.Equal(Text(Fragment.Compute(snapshot, zoned)), Text(some));
            Assert.Equal(Fragment.Compute(snapshot, zoned).Hash, some.Hash);
        }
    }

    [Fact]
    public void OneInstanceChangedInABigApplicationIsSerialisedAgainWithItsSegmentOnly()
    {
        var entries = new[] { new SubscriptionEntry("big", null, Meta.Empty) };
        var instances = Enumerable.Range(0, 2000).Select(i => Sample(i, revision: 1)).ToArray();
        var before = Fragment.Compute(new ApplicationSnapshot("big", [.. instances]), entries);
        instances[1234] = Sample(1234, revision: 2);
        var after = Fragment.Compute(new ApplicationSnapshot("big", [.. instances]), entries, before);

        Assert.True(before.Parts.Length > 20, $"{before.Parts.Length} segments");
        Assert.Single(after.Parts, part => !before.Parts.Contains(part));
        Assert.Equal(Text(Fragment.Compute(new ApplicationSnapshot("big", [.. instances]), entries)), Text(after));
        Assert.NotEqual(before.Hash, after.Hash);

        static Instance Sample(int i, long revision) =>
            new(new InstanceKey("big", "http", $"10.1.{i / 250}.{i % 250}:80"), Meta.From([new("revision", $"{revision}")]), 30, DateTimeOffset.UnixEpoch, revision);
    }

    /// <summary>The endpoints as the answer writes them: the parts joined by commas.</summary>
    private static string Text(Fragment fragment) => string.Join(",", fragment.Parts.Select(part => System.Text.Encoding.UTF8.GetString(part)));
}
