using Registry.Leases;

namespace Registry.Tests.Timing;

/// <summary>When the sweeper may skip its statement: database times handed in, no clock read.</summary>
public sealed class SweepScheduleTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 27, 12, 0, 0, TimeSpan.Zero);
    private readonly SweepSchedule _schedule = new();

    [Fact]
    public void ANodeThatKnowsNothingYetSweeps()
    {
        Assert.True(_schedule.Due(Now));
    }

    [Fact]
    public void AfterASweepThatLeftNothingItWaitsForTheEarliestRemainingExpiry()
    {
        _schedule.SweepStarting();
        _schedule.SweepFinished(Now + TimeSpan.FromSeconds(30));

        Assert.False(_schedule.Due(Now + TimeSpan.FromSeconds(29.999)));
        Assert.True(_schedule.Due(Now + TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public void AnEmptyRegistryCostsNoStatementUntilALeaseIsLoaded()
    {
        _schedule.SweepStarting();
        _schedule.SweepFinished(null);
        Assert.False(_schedule.Due(DateTimeOffset.MaxValue.AddTicks(-1)));

        _schedule.Consider(Now + TimeSpan.FromSeconds(1));
        Assert.False(_schedule.Due(Now));
        Assert.True(_schedule.Due(Now + TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public void AShorterLeaseLoadedLaterBringsTheSweepForward()
    {
        _schedule.SweepStarting();
        _schedule.SweepFinished(Now + TimeSpan.FromMinutes(10));

        _schedule.Consider(Now + TimeSpan.FromSeconds(2));
        _schedule.Consider(Now + TimeSpan.FromMinutes(20)); // a later one moves nothing

        Assert.True(_schedule.Due(Now + TimeSpan.FromSeconds(2)));
    }

    [Fact]
    public void ALeaseLoadedWhileTheSweepReadTheDatabaseIsNotForgotten()
    {
        _schedule.SweepStarting();
        _schedule.Consider(Now + TimeSpan.FromSeconds(3)); // loaded after the sweep's read
        _schedule.SweepFinished(Now + TimeSpan.FromSeconds(60));

        Assert.True(_schedule.Due(Now + TimeSpan.FromSeconds(3)));
    }

    [Fact]
    public void ALeaseLoadedBeforeTheSweepStartedIsCoveredByWhatTheSweepRead()
    {
        _schedule.Consider(Now + TimeSpan.FromSeconds(3));
        _schedule.SweepStarting();
        // The sweep evicted it (or saw it renewed): the earliest left is a minute away.
        _schedule.SweepFinished(Now + TimeSpan.FromSeconds(60));

        Assert.False(_schedule.Due(Now + TimeSpan.FromSeconds(3)));
    }
}
