using System.Net;
using System.Net.Http.Headers;
using Microsoft.Extensions.Logging;
using Registry.Client.UnitTests.Infrastructure;

namespace Registry.Client.UnitTests;

public sealed class LeaseTests : ScriptedTest
{
    [Fact]
    public async Task ALeaseLoopOutlivesAnExceptionNoRegistryTypeWouldThrow()
    {
        // An app-wide handler (a resilience pipeline's timeout, a broken delegating handler) throws what it likes.
        var failures = 2;
        Handler.Respond = (r, _) => r.Path == "/v1/register" && Interlocked.Decrement(ref failures) >= 0
            ? throw new InvalidOperationException("thrown by a handler the app added")
            : Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow()));

        await using var lease = await NewClient().RegisterAsync(Instance());
        Assert.False(lease.IsRegistered);
        Assert.Equal(RegistryConnectionState.Unavailable, lease.State);
        // Every node was tried: an outage, with what the handler threw inside.
        Assert.IsType<InvalidOperationException>(Assert.IsType<RegistryUnavailableException>(lease.LastError).InnerException);

        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await Handler.NextAsync(r => r.Path == "/v1/register");
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await Eventually(() => lease.IsRegistered);

        Assert.Equal(RegistryConnectionState.Connected, lease.State);
        Assert.Null(lease.LastError);
        Assert.Equal(3, Handler.Count("/v1/register"));
    }

    [Fact]
    public async Task DisposingALeaseFinishesWhateverTheUnregisterThrows()
    {
        Handler.Respond = (r, _) => r.Path == "/v1/unregister"
            ? throw new InvalidOperationException("thrown by a handler the app added")
            : Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow()));
        var lease = await NewClient().RegisterAsync(Instance());

        await lease.DisposeAsync();

        Assert.Equal(RegistryConnectionState.Stopped, lease.State);
        Assert.Equal(1, Handler.Count("/v1/unregister"));
        Assert.Contains(Logs.Entries, e => e.Level == LogLevel.Warning && e.Message.StartsWith("Could not unregister", StringComparison.Ordinal));
    }

    [Fact]
    public async Task DisposingWhileARegistrationIsInFlightStillUnregisters()
    {
        // The first attempt fails; the retry is held by the registry (it may commit after the client gave up on it).
        var held = new TaskCompletionSource<HttpResponseMessage>();
        var attempts = 0;
        Handler.Respond = (r, ct) => r.Path switch
        {
            "/v1/register" when Interlocked.Increment(ref attempts) == 1 => throw new HttpRequestException("refused connection"),
            "/v1/register" => held.Task.WaitAsync(ct),
            _ => Task.FromResult(new HttpResponseMessage(HttpStatusCode.NotFound)),
        };
        var lease = await NewClient().RegisterAsync(Instance());
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await Handler.NextAsync(r => r.Path == "/v1/register");
        await Handler.NextAsync(r => r.Path == "/v1/register"); // the retry, now held

        await lease.DisposeAsync();

        Assert.Equal(1, Handler.Count("/v1/unregister"));
        Assert.False(lease.IsRegistered);
    }

    [Fact]
    public async Task ACancellationThatIsNotTheCallersDefersTheFirstRegistrationInsteadOfFailingIt()
    {
        // A handler the app added gives up on its own (its timeout, not the caller's token).
        var first = true;
        Handler.Respond = (_, _) =>
        {
            if (first)
            {
                first = false;
                throw new TaskCanceledException("a handler's own timeout");
            }

            return Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow()));
        };

        await using var lease = await NewClient().RegisterAsync(Instance());
        Assert.False(lease.IsRegistered);

        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await Eventually(() => lease.IsRegistered);
    }

    [Fact]
    public async Task ALeaseThatNeverSentARegistrationSendsNoUnregister()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Problem(HttpStatusCode.BadRequest, "One or more validation errors occurred.", ""","errors":{"addr":["is not host:port"]}"""));

        var error = await Assert.ThrowsAsync<RegistryClientException>(() => NewClient().RegisterAsync(Instance()));

        Assert.Equal("is not host:port", Assert.Single(error.Problem!.Errors["addr"]));
        Assert.Contains("addr: is not host:port", error.Message, StringComparison.Ordinal);
        Assert.Equal(0, Handler.Count("/v1/unregister"));
    }

    [Fact]
    public async Task ALeaseAnsweredWithoutATtlBacksOffInsteadOfHeartbeatingAtOnce()
    {
        // Something that is not the registry (a default backend) answers every request 200 with an empty object.
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Json(HttpStatusCode.OK, "{}"));

        await using var lease = await NewClient().RegisterAsync(Instance());

        Assert.False(lease.IsRegistered);
        Assert.Contains("ttl", Assert.IsType<RegistryUnavailableException>(lease.LastError).Message, StringComparison.Ordinal);
        var delay = await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(30));
        Assert.True(delay >= TimeSpan.FromSeconds(0.5), $"a delay of {delay}");
        await Handler.NextAsync(r => r.Path == "/v1/register" && Handler.Count("/v1/register") == 2);
        // Nothing more until the clock moves: no heartbeat timed by a TTL of zero.
        await Clock.NextTimerAsync(d => !Scripted.IsRequestTimeout(d));
        Assert.Equal(2, Handler.Sent.Count);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("past date")]
    public async Task ARetryAfterOfZeroOrInThePastDoesNotTurnBackoffIntoABusyLoop(string retryAfter)
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Unavailable(retryAfter == "0"
            ? new RetryConditionHeaderValue(TimeSpan.Zero)
            : new RetryConditionHeaderValue(Clock.GetUtcNow().AddMinutes(-5))));

        await using var lease = await NewClient().RegisterAsync(Instance());
        var delays = new List<TimeSpan>();
        for (var i = 0; i < 4; i++)
        {
            delays.Add(await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(30)));
        }

        // Exponential from the 1 s base, each drawn from the upper half of its step: never zero.
        Assert.All(delays, d => Assert.True(d >= TimeSpan.FromSeconds(0.5), $"a delay of {d}"));
        Assert.True(delays[3] >= TimeSpan.FromSeconds(4), $"the fourth delay is {delays[3]}: backoff did not grow");
    }

    [Fact]
    public async Task ALargeRetryAfterIsCappedBelowTheLeasesRenewalDeadline()
    {
        var registered = false;
        Handler.Respond = (r, _) =>
        {
            if (r.Path == "/v1/register")
            {
                registered = true;
                return Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow()));
            }

            // Every heartbeat: "come back in an hour", which would let a 30 s lease run out 119 times over.
            return Task.FromResult(Scripted.Unavailable(new RetryConditionHeaderValue(TimeSpan.FromHours(1))));
        };
        await using var lease = await NewClient().RegisterAsync(Instance());
        Assert.True(registered);

        var heartbeatIn = await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await Handler.NextAsync(r => r.Path == "/v1/heartbeat");
        var retryIn = await Clock.NextTimerAsync(d => d != TimeSpan.FromSeconds(5));

        // The lease has 30 s - heartbeatIn left; the retry comes within half of it, so there is room for another.
        Assert.True(retryIn <= (TimeSpan.FromSeconds(30) - heartbeatIn) / 2, $"retry in {retryIn} after a heartbeat at {heartbeatIn}");
        Assert.True(retryIn >= TimeSpan.FromSeconds(0.5));
    }

    /// <summary>
    /// A heartbeat answered 401 in a token rotation (the new token not yet on that node, or the old one revoked a moment
    /// before the app's file changed). Before, the lease took it for a refusal of the registration: it waited
    /// RetryMaxDelay (24-36 s) and registered again, after its 30 s lease had run out.
    /// </summary>
    [Fact]
    public async Task AHeartbeatAnswered401IsAskedAgainWithinTheLease()
    {
        var unauthorized = true;
        Handler.Respond = (r, _) => Task.FromResult(r.Path == "/v1/register" ? Scripted.Lease(30, Clock.GetUtcNow())
            : unauthorized ? Scripted.Problem(HttpStatusCode.Unauthorized, "Unauthorized", ""","detail":"The token has been revoked." """)
            : Scripted.Lease(30, Clock.GetUtcNow()));
        await using var lease = await NewClient().RegisterAsync(Instance());

        var heartbeatIn = await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await Eventually(() => lease.State == RegistryConnectionState.Refused);
        unauthorized = false;
        var retryIn = await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(40));
        await Eventually(() => lease.State == RegistryConnectionState.Connected);

        Assert.True(retryIn <= (TimeSpan.FromSeconds(30) - heartbeatIn) / 2, $"retry in {retryIn} after a heartbeat at {heartbeatIn}");
        Assert.Equal(["/v1/register", "/v1/heartbeat", "/v1/heartbeat"], Handler.Sent.Select(r => r.Path));
    }

    /// <summary>
    /// A 3 s lease whose heartbeat goes first to a node that hangs. Before, the heartbeat waited the whole request timeout
    /// (5 s) for it: the lease ran out before the next node was asked.
    /// </summary>
    [Fact]
    public async Task AHeartbeatWaitsForAHangingNodeNoMoreThanAThirdOfTheTtl()
    {
        Handler.Respond = (r, ct) => r.Path == "/v1/heartbeat" && r.Uri.Host == Scripted.ServerA.Host
            ? Scripted.HeldAsync(ct)
            : Task.FromResult(Scripted.Lease(3, Clock.GetUtcNow()));
        await using var lease = await NewClient(o => o.Ttl = TimeSpan.FromSeconds(3), Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance());

        var heartbeatIn = await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));
        await Handler.NextAsync(r => r.Path == "/v1/heartbeat" && r.Uri.Host == Scripted.ServerA.Host);
        var waited = await Clock.NextTimerAsync(d => d > TimeSpan.Zero);
        Clock.Advance(waited);
        await Handler.NextAsync(r => r.Path == "/v1/heartbeat" && r.Uri.Host == Scripted.ServerB.Host);

        Assert.True(heartbeatIn + waited < TimeSpan.FromSeconds(3), $"heartbeat at {heartbeatIn}, then waited {waited} for the hanging node");
    }

    /// <summary>
    /// A token revoked for good: each heartbeat's 401 is asked again within half of what the lease has left, but never
    /// sooner than RetryBaseDelay (before that floor, ever faster, the last ones milliseconds apart), and once the lease
    /// has run out at the refusal's own pace.
    /// </summary>
    [Fact]
    public async Task AHeartbeatAnswered401ForGoodIsNotAskedEverFasterToTheLeasesEnd()
    {
        Handler.Respond = (r, _) => Task.FromResult(r.Path == "/v1/register" && !Handler.Sent.Any(s => s.Path == "/v1/heartbeat")
            ? Scripted.Lease(30, Clock.GetUtcNow())
            : Scripted.Problem(HttpStatusCode.Unauthorized, "Unauthorized", ""","detail":"The token has been revoked." """));
        await using var lease = await NewClient().RegisterAsync(Instance());

        var passed = await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        var delays = new List<TimeSpan>();
        // At most 20: asked ever faster, they would never pass the lease's end.
        while (passed < TimeSpan.FromSeconds(30) && delays.Count < 20)
        {
            // Bounded: a delay that reaches zero no longer waits on the clock at all.
            var delay = await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(40)).WaitAsync(Scripted.Patience);
            delays.Add(delay);
            passed += delay;
        }

        Assert.All(delays, d => Assert.True(d >= TimeSpan.FromSeconds(1), $"delays {string.Join(", ", delays)}"));
        Assert.InRange(delays.Count, 2, 8);
        Assert.InRange(await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(40)), TimeSpan.FromSeconds(24), TimeSpan.FromSeconds(36));
    }

    [Fact]
    public async Task HeartbeatsFailingPastTheLeasesEndRetryAtTheHeartbeatPaceNotEverySecond()
    {
        // A database outage longer than the TTL: every node answers 503 with Retry-After: 2, as the registry does.
        Handler.Respond = (r, _) => Task.FromResult(r.Path == "/v1/register"
            ? Scripted.Lease(30, Clock.GetUtcNow())
            : Scripted.Unavailable(new RetryConditionHeaderValue(TimeSpan.FromSeconds(2))));
        await using var lease = await NewClient().RegisterAsync(Instance());

        var passed = TimeSpan.Zero;
        var lapsed = new List<TimeSpan>();
        while (lapsed.Count < 6)
        {
            var delay = await Clock.PassNextDelayAsync(TimeSpan.FromMinutes(1));
            if (passed >= TimeSpan.FromSeconds(30))
            {
                lapsed.Add(delay);
            }

            passed += delay;
        }

        // Before: exactly the 1 s base delay, for the whole outage, from every instance of the fleet at once. Now the
        // backoff as for any outage, never under the Retry-After, and at most the heartbeat's own pace (a third of the
        // TTL), so the lease is renewed as soon as the registry can take it again.
        Assert.All(lapsed, d => Assert.InRange(d, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(10)));
        Assert.True(lapsed.Distinct().Count() > 1, "every retry waited exactly the same");
    }

    [Fact]
    public async Task ARefusedLeaseRetriesAtAJitteredPaceNotInLockstep()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Problem(HttpStatusCode.Forbidden, "Forbidden", ""","detail":"The credential may not register provider_test.","application":"provider_test","scope":"register" """));
        // The first refusal throws to the caller (nothing registered); later ones come from the background loop,
        // as when a token is revoked while the process runs: register first, then refuse.
        var refuse = false;
        var inner = Handler.Respond;
        Handler.Respond = (r, ct) => refuse ? inner(r, ct) : Task.FromResult(Scripted.Lease(3, Clock.GetUtcNow()));
        await using var lease = await NewClient(o => o.Ttl = TimeSpan.FromSeconds(3)).RegisterAsync(Instance());
        refuse = true;

        var delays = new List<TimeSpan>();
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));
        for (var i = 0; i < 4; i++)
        {
            // Past the heartbeat's own timeout (a third of the 3 s TTL).
            var delay = await Clock.NextTimerAsync(d => d > TimeSpan.FromSeconds(1) && d <= TimeSpan.FromSeconds(40) && !Scripted.IsRequestTimeout(d));
            Clock.Advance(delay);
            delays.Add(delay);
        }

        Assert.Equal(RegistryConnectionState.Refused, lease.State);
        var denied = Assert.IsType<RegistryAccessDeniedException>(lease.LastError);
        Assert.False(denied.IsAuthenticationFailure);
        Assert.Equal("provider_test", denied.Problem!.Extensions["application"].GetString());
        // About RetryMaxDelay (30 s), give or take a fifth, and not one fixed value for the whole fleet.
        Assert.All(delays, d => Assert.InRange(d, TimeSpan.FromSeconds(24), TimeSpan.FromSeconds(36)));
        Assert.True(delays.Distinct().Count() > 1, "every refusal waited exactly the same");
    }

    private static async Task Eventually(Func<bool> condition)
    {
        using var deadline = new CancellationTokenSource(Scripted.Patience);
        while (!condition())
        {
            await Task.Delay(5, deadline.Token);
        }
    }
}
