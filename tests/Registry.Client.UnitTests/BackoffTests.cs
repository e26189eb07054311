using System.Net;
using System.Net.Http.Headers;
using Registry.Client.UnitTests.Infrastructure;

namespace Registry.Client.UnitTests;

/// <summary>The client's backoff rule alone (no loop, no clock), and Retry-After as a date read on the fake clock.</summary>
public sealed class BackoffTests : ScriptedTest
{
    private static readonly Exception Outage = new RegistryUnavailableException("down");

    private static RegistryUnavailableException AskingFor(TimeSpan after) => new("busy", after, null);

    [Fact]
    public void EachDelayIsDrawnFromTheUpperHalfOfAStepThatDoublesUpToTheCap()
    {
        var backoff = new Backoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(10));
        var steps = new[] { 1, 2, 4, 8, 10, 10, 10 };
        foreach (var step in steps)
        {
            var delay = backoff.Next(Outage);
            Assert.InRange(delay, TimeSpan.FromSeconds(step / 2.0), TimeSpan.FromSeconds(step));
        }

        Assert.Equal(steps.Length, backoff.Failures);
    }

    [Fact]
    public void ASuccessStartsTheRampOver()
    {
        var backoff = new Backoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(30));
        for (var i = 0; i < 5; i++)
        {
            backoff.Next(Outage);
        }

        backoff.Reset();

        Assert.Equal(0, backoff.Failures);
        Assert.InRange(backoff.Next(Outage), TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(1));
    }

    [Fact]
    public void ThousandsOfFailuresNeitherOverflowNorPassTheCap()
    {
        var backoff = new Backoff(TimeSpan.FromSeconds(1), TimeSpan.FromMinutes(1));
        var delays = Enumerable.Range(0, 5_000).Select(_ => backoff.Next(Outage)).ToList();

        Assert.All(delays, d => Assert.InRange(d, TimeSpan.FromSeconds(0.5), TimeSpan.FromMinutes(1)));
        Assert.All(delays.Skip(10), d => Assert.InRange(d, TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(1)));
    }

    [Fact]
    public void ARetryAfterIsHonouredForAtMostFiveMinutes()
    {
        var backoff = new Backoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(30));

        Assert.InRange(backoff.Next(AskingFor(TimeSpan.FromHours(1))), TimeSpan.FromMinutes(5) / 1.2, TimeSpan.FromMinutes(5));
        Assert.InRange(backoff.Next(AskingFor(TimeSpan.FromMinutes(4.9))), TimeSpan.FromMinutes(5) / 1.2, TimeSpan.FromMinutes(5));
        // Past what Task.Delay takes (49.7 days): before, the loop's delay threw instead of waiting.
        Assert.InRange(backoff.Next(AskingFor(TimeSpan.FromDays(365))), TimeSpan.FromMinutes(5) / 1.2, TimeSpan.FromMinutes(5));
    }

    [Fact]
    public void ARetryAfterLongerThanTheBackoffWinsWithUpToAFifthOfJitter()
    {
        var backoff = new Backoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5));

        Assert.InRange(backoff.Next(AskingFor(TimeSpan.FromSeconds(60))), TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(72));
    }

    [Fact]
    public void ARetryAfterShorterThanTheBackoffOrOfZeroDoesNotShortenIt()
    {
        var backoff = new Backoff(TimeSpan.FromSeconds(4), TimeSpan.FromSeconds(30));

        Assert.InRange(backoff.Next(AskingFor(TimeSpan.Zero)), TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(4));
        Assert.InRange(backoff.Next(AskingFor(TimeSpan.FromSeconds(1))), TimeSpan.FromSeconds(4), TimeSpan.FromSeconds(8));
    }

    [Fact]
    public void TheCallersCeilingBoundsEvenARetryAfterLessUpToAFifthButNeverGoesBelowTheBaseDelay()
    {
        var backoff = new Backoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(30));

        var clipped = Enumerable.Range(0, 50).Select(_ => backoff.Next(AskingFor(TimeSpan.FromHours(1)), ceiling: TimeSpan.FromSeconds(7))).ToList();
        Assert.All(clipped, d => Assert.InRange(d, TimeSpan.FromSeconds(5.6), TimeSpan.FromSeconds(7)));
        Assert.True(clipped.Distinct().Count() > 1, "every clipped delay was the same");
        Assert.InRange(backoff.Next(AskingFor(TimeSpan.FromHours(1)), ceiling: TimeSpan.FromSeconds(1.1)), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1.1));
        var floored = Enumerable.Range(0, 50).Select(_ => backoff.Next(AskingFor(TimeSpan.FromHours(1)), ceiling: TimeSpan.FromMilliseconds(10))).ToList();
        Assert.All(floored, d => Assert.InRange(d, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1.2)));
        Assert.True(floored.Distinct().Count() > 1, "every delay at the base was the same");
    }

    [Fact]
    public void JitterStaysWithinItsBoundsAndVaries()
    {
        var draws = Enumerable.Range(0, 200).Select(_ => Backoff.Jitter(TimeSpan.FromSeconds(24), TimeSpan.FromSeconds(36))).ToList();

        Assert.All(draws, d => Assert.InRange(d, TimeSpan.FromSeconds(24), TimeSpan.FromSeconds(36)));
        Assert.True(draws.Distinct().Count() > 1);
    }

    [Fact]
    public async Task ARetryAfterDateIsReadAgainstTheClientsClock()
    {
        // 90 s ahead on the client's (fake) clock, whatever the machine's clock says.
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Unavailable(new RetryConditionHeaderValue(Clock.GetUtcNow().AddSeconds(90))));
        await using var subscription = await NewClient(o => o.RetryMaxDelay = TimeSpan.FromSeconds(5)).SubscribeAsync(new SubscriptionEntry("provider_test"));

        var delay = await Clock.PassNextDelayAsync(TimeSpan.FromMinutes(5));

        Assert.InRange(delay, TimeSpan.FromSeconds(90), TimeSpan.FromSeconds(108));
        Assert.Equal(TimeSpan.FromSeconds(90), Assert.IsType<RegistryUnavailableException>(subscription.LastError).RetryAfter);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ((RegistryUnavailableException)subscription.LastError!).StatusCode);
    }
}
