using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Registry.Leases;

namespace Registry.Tests.Timing;

/// <summary>
/// The renewal-skip rule and the 503 rule of a heartbeat answered from memory, on a fake clock:
/// defaults are a 250 ms write interval, a 1 s liveness mark and a quarter of the TTL unrecorded.
/// </summary>
public sealed class RenewalRuleTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 27, 12, 0, 0, TimeSpan.Zero);
    private readonly FakeTimeProvider _time = new(Now);
    private readonly RenewalRule _rule;

    public RenewalRuleTests() => _rule = new RenewalRule(Options.Create(new LeaseOptions()), _time);

    [Fact]
    public void ARenewalIsSkippedWhileMoreThanHalfTheLeaseAndTwoIntervalsAreAhead()
    {
        var ttl = TimeSpan.FromSeconds(30);

        // Half (15 s) plus two intervals (0.5 s) is the line.
        Assert.False(_rule.WriteDue(Now + TimeSpan.FromSeconds(15.5) + TimeSpan.FromTicks(1), Now, ttl));
        Assert.True(_rule.WriteDue(Now + TimeSpan.FromSeconds(15.5), Now, ttl));
        Assert.True(_rule.WriteDue(Now, Now, ttl));
    }

    [Fact]
    public void AShortLeaseIsAlwaysWrittenBecauseTheMarginOfTwoIntervalsCoversIt()
    {
        // A 1 s lease renewed the moment it was written: 1 s ahead is not more than 0.5 s + 0.5 s.
        Assert.True(_rule.WriteDue(Now + TimeSpan.FromSeconds(1), Now, TimeSpan.FromSeconds(1)));
    }

    [Fact]
    public void AWaitingRenewalIsRefusedOnceItWaitedAShareOfTheTtl()
    {
        var ttl = TimeSpan.FromSeconds(20); // a quarter: 5 s
        Assert.True(_rule.CanRecord(ttl));
        _rule.Gathered();

        _time.Advance(TimeSpan.FromSeconds(5));
        Assert.True(_rule.CanRecord(ttl));
        _time.Advance(TimeSpan.FromTicks(1));
        Assert.False(_rule.CanRecord(ttl));
    }

    [Fact]
    public void TheLimitIsNeverBelowASecondSoASlowFlushRefusesNobody()
    {
        var ttl = TimeSpan.FromSeconds(1); // a quarter would be 250 ms
        _rule.Gathered();

        _time.Advance(TimeSpan.FromMilliseconds(999));
        Assert.True(_rule.CanRecord(ttl));
        _time.Advance(TimeSpan.FromMilliseconds(2));
        Assert.False(_rule.CanRecord(ttl));
    }

    [Fact]
    public void ARecordedFlushClearsTheWaitAndRenewalsGatheredDuringItWaitFromItsStart()
    {
        var ttl = TimeSpan.FromSeconds(20);
        _rule.Gathered();
        _time.Advance(TimeSpan.FromSeconds(4));
        var started = _rule.FlushStarting();
        _rule.Recorded(started, more: false);

        _time.Advance(TimeSpan.FromSeconds(4)); // 8 s after the first renewal, but it was recorded
        Assert.True(_rule.CanRecord(ttl));

        _rule.Gathered();
        started = _rule.FlushStarting();
        _time.Advance(TimeSpan.FromSeconds(1));
        _rule.Gathered(); // arrives during the flush: waits since the flush began
        _rule.Recorded(started, more: true);
        _time.Advance(TimeSpan.FromSeconds(4));
        Assert.True(_rule.CanRecord(ttl));
        _time.Advance(TimeSpan.FromTicks(1));
        Assert.False(_rule.CanRecord(ttl));
    }

    [Fact]
    public void ANodeThatHasNotReachedTheDatabaseRefusesBeforeAnyRenewalWaits()
    {
        var ttl = TimeSpan.FromSeconds(20);
        _rule.Recorded(_rule.FlushStarting(), more: false);

        // The limit (5 s) plus a liveness mark (1 s) plus an interval (250 ms).
        _time.Advance(TimeSpan.FromSeconds(6.25));
        Assert.True(_rule.CanRecord(ttl));
        _time.Advance(TimeSpan.FromTicks(1));
        Assert.False(_rule.CanRecord(ttl));

        _rule.Recorded(_rule.FlushStarting(), more: false);
        Assert.True(_rule.CanRecord(ttl));
    }

    [Fact]
    public void ANodeWhoseLastAttemptFailedRefusesAtOnceUntilItReachesTheDatabaseAgain()
    {
        // A cut seen by a failed flush: a renewal due now (as little as a sixth of the lease may be
        // left in the database) cannot be written before another node's sweeper would end it.
        var ttl = TimeSpan.FromSeconds(6);
        _rule.Recorded(_rule.FlushStarting(), more: false);
        _time.Advance(TimeSpan.FromMilliseconds(250));
        _rule.FlushStarting();
        _rule.Failed();

        Assert.False(_rule.CanRecord(ttl));

        _time.Advance(TimeSpan.FromMilliseconds(250));
        _rule.Recorded(_rule.FlushStarting(), more: false);
        Assert.True(_rule.CanRecord(ttl));
    }
}
