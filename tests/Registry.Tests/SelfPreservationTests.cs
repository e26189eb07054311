using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Registry.Leases;
using Registry.Telemetry;

namespace Registry.Tests;

/// <summary>
/// Self-preservation's budget as a function of what the cluster holds and evicted in the
/// window (the sweeper reads both from the database): no clock, no database.
/// </summary>
public sealed class SelfPreservationTests : IDisposable
{
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
    private readonly SelfPreservation _rule;

    public SelfPreservationTests() => _rule = new SelfPreservation(
        Options.Create(new LeaseOptions { SelfPreservationShare = 0.2, SelfPreservationMinInstances = 2 }),
        new RegistryMetrics(_services.GetRequiredService<System.Diagnostics.Metrics.IMeterFactory>()),
        NullLogger<SelfPreservation>.Instance);

    [Fact]
    public void AFewExpiriesAreAllEvicted()
    {
        Assert.Equal(int.MaxValue, _rule.Budget(live: 100, expired: 2, recentlyEvicted: 0));
        Assert.False(_rule.Engaged);
    }

    [Fact]
    public void AMassExpiryIsRateLimitedToTheShareOfThePopulationPerWindow()
    {
        Assert.Equal(4, _rule.Budget(live: 20, expired: 10, recentlyEvicted: 0));
        Assert.True(_rule.Engaged);
    }

    [Fact]
    public void EvictionsByAnyNodeInTheWindowCountAgainstTheBudget()
    {
        // 4 already gone (whichever node swept them): the population is still 20, the budget spent.
        Assert.Equal(0, _rule.Budget(live: 16, expired: 6, recentlyEvicted: 4));
        Assert.Equal(1, _rule.Budget(live: 17, expired: 6, recentlyEvicted: 3));
    }

    [Fact]
    public void ItReleasesOnceNothingExpiredIsLeft()
    {
        _rule.Budget(live: 20, expired: 10, recentlyEvicted: 0);

        Assert.Equal(int.MaxValue, _rule.Budget(live: 10, expired: 0, recentlyEvicted: 10));
        Assert.False(_rule.Engaged);
        Assert.Equal(0, _rule.LastExpired);
    }

    [Fact]
    public void NoMoreThanTheMinimumIsEverAMassExpiryAndWhileEngagedTheMinimumIsStillAllowed()
    {
        // 3 of 5 (60%) but only 3 instances: above the 2-instance minimum, so engaged; the
        // budget is then the larger of the share (1) and the minimum (2).
        Assert.Equal(2, _rule.Budget(live: 5, expired: 3, recentlyEvicted: 0));
        Assert.True(_rule.Engaged);

        // 2 of 4: at the minimum, not above it, so all go.
        Assert.Equal(int.MaxValue, _rule.Budget(live: 4, expired: 2, recentlyEvicted: 0));
        Assert.False(_rule.Engaged);
    }

    public void Dispose() => _services.Dispose();
}
