using System.Net.Http.Headers;
using System.Net;
using System.Text;
using System.Threading.Channels;
using Registry.Client.UnitTests.Infrastructure;

namespace Registry.Client.UnitTests;

/// <summary>Sessions and probes: what the lease sends, and how it answers a session's end.</summary>
public sealed class RegistrationModeTests : ScriptedTest
{
    private const string LeaseEvent = """
        event: lease
        data: {"application":"provider_test","protocol":"http","addr":"10.0.0.1:80","meta":{},"ttl":15,"expires":"2030-01-01T00:00:15.000Z"}


        """;

    [Fact]
    public async Task ASessionLeaseIsRegisteredOnceItsLeaseEventArrivesAndDisposingClosesItAndUnregisters()
    {
        var stream = Sessions();

        await using (var lease = await NewClient(o => o.Ttl = TimeSpan.FromSeconds(15)).RegisterAsync(Instance(), RegistrationMode.Session))
        {
            Assert.True(lease.IsRegistered);
            Assert.Equal(RegistryConnectionState.Connected, lease.State);
            Assert.Equal(TimeSpan.FromSeconds(15), lease.Ttl);
            Assert.Equal(RegistrationMode.Session, lease.Mode);
            var opened = Assert.Single(Handler.Sent);
            Assert.Equal("/v1/sessions", opened.Path);
            Assert.Equal("?ttl=15", opened.Uri.Query);

            await stream.Current.Writer.WriteAsync(": keep-alive\n\n");
            // No heartbeat however long the session lasts.
            Clock.Advance(TimeSpan.FromMinutes(5));
            Assert.Equal(0, Handler.Count("/v1/heartbeat"));
        }

        await stream.Closed.Task.WaitAsync(Scripted.Patience);
        Assert.Equal(1, Handler.Count("/v1/unregister"));
    }

    [Fact]
    public async Task ASessionWhoseStreamEndsWithoutEndedIsOpenedAgainOnTheNextServer()
    {
        var stream = Sessions();
        await using var lease = await NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance(), RegistrationMode.Session);
        Assert.Equal("registry-a", Handler.Sent[0].Uri.Host);

        stream.Current.Writer.Complete(); // the node stopped: the stream ends without "ended"
        await Eventually(() => lease.State == RegistryConnectionState.Unavailable);
        Assert.False(lease.IsRegistered);
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));

        var reopened = await Handler.NextAsync(r => r.Path == "/v1/sessions" && r != Handler.Sent[0]);
        Assert.Equal("registry-b", reopened.Uri.Host);
        await Eventually(() => lease.IsRegistered);
    }

    [Fact]
    public async Task ASessionWhoseLeaseEventIsNotJsonIsClosedAndOpenedOnTheNextServer()
    {
        Sessions();
        var sessions = Handler.Respond;
        var garbled = Channel.CreateUnbounded<string>();
        var garbledClosed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        garbled.Writer.TryWrite("event: lease\ndata: {\"ttl\": 15,\n\n");
        Handler.Respond = (r, ct) => r.Path == "/v1/sessions" && r.Uri.Host == Scripted.ServerA.Host
            ? Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK) { Content = new StreamContent(new ChannelStream(garbled.Reader, garbledClosed, () => { })) })
            : sessions(r, ct);

        // The first attempt fails: the lease comes back unregistered and tries again after its backoff, elsewhere.
        await using var lease = await NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance(), RegistrationMode.Session);
        await garbledClosed.Task.WaitAsync(Scripted.Patience);
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));

        await Eventually(() => lease.IsRegistered);
        Assert.Equal(["registry-a", "registry-b"], Handler.Sent.Where(r => r.Path == "/v1/sessions").Select(r => r.Uri.Host));
    }

    [Fact]
    public async Task ASessionRefusedWithAnErrorWhoseBodyStallsIsOpenedOnTheNextServer()
    {
        Sessions();
        var sessions = Handler.Respond;
        // A proxy in front of node A sends a 503's headers and never its body.
        Handler.Respond = (r, ct) => r.Uri.Host == Scripted.ServerA.Host
            ? Task.FromResult(new HttpResponseMessage(HttpStatusCode.ServiceUnavailable)
            {
                // A body nothing is ever written to: it yields no byte until its reader gives up.
                Content = new StreamContent(new ChannelStream(Channel.CreateUnbounded<string>().Reader, new(), () => { })),
            })
            : sessions(r, ct);

        var registering = NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance(), RegistrationMode.Session);
        await Handler.NextAsync(r => r.Path == "/v1/sessions");
        await Clock.NextTimerAsync(Scripted.IsRequestTimeout); // the headers' timeout, then the body's
        await Clock.NextTimerAsync(Scripted.IsRequestTimeout);
        Clock.Advance(TimeSpan.FromSeconds(5));

        await using var lease = await registering.WaitAsync(Scripted.Patience);
        Assert.Equal(["registry-a", "registry-b"], Handler.Sent.Select(r => r.Uri.Host));
        Assert.True(lease.IsRegistered);
    }

    [Fact]
    public async Task SessionsDroppedRightAfterTheirLeaseAreOpenedAgainAfterAGrowingBackoffAndAtOnceAfterOneThatLasted()
    {
        // A node or proxy that takes each session and cuts its stream at once.
        var stream = Sessions();
        await using var lease = await NewClient().RegisterAsync(Instance(), RegistrationMode.Session);
        var delays = new List<TimeSpan>();
        for (var i = 0; i < 5; i++)
        {
            var opens = Handler.Count("/v1/sessions");
            stream.Current.Writer.Complete();
            await Eventually(() => lease.State == RegistryConnectionState.Unavailable);
            delays.Add(await Clock.PassNextDelayAsync(TimeSpan.FromMinutes(1)));
            await Eventually(() => Handler.Count("/v1/sessions") == opens + 1 && lease.IsRegistered);
        }

        // Before: every delay was half to one RetryBaseDelay (1 s), since each open started the backoff over.
        Assert.True(delays[4] >= TimeSpan.FromSeconds(4), $"delays {string.Join(", ", delays)}");

        // A session that lasted (the idle timeout, 20 s) is opened again at once when its node goes.
        Clock.Advance(TimeSpan.FromSeconds(21));
        stream.Current.Writer.Complete();
        await Eventually(() => lease.State == RegistryConnectionState.Unavailable);
        Assert.InRange(await Clock.PassNextDelayAsync(TimeSpan.FromMinutes(1)), TimeSpan.FromSeconds(0.5), TimeSpan.FromSeconds(1));
    }

    [Fact]
    public async Task ASilentSessionIsGivenUpAfterSessionIdleTimeoutAndOpenedAgain()
    {
        var stream = Sessions();
        await using var lease = await NewClient(o => o.SessionIdleTimeout = TimeSpan.FromMilliseconds(300)).RegisterAsync(Instance(), RegistrationMode.Session);

        // Nothing comes (a half-open connection): the idle timeout runs on the system's clock.
        await stream.Closed.Task.WaitAsync(Scripted.Patience);
        await Eventually(() => lease.State == RegistryConnectionState.Unavailable);
        Assert.IsType<TimeoutException>(lease.LastError?.InnerException);
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await Handler.NextAsync(r => r.Path == "/v1/sessions" && r != Handler.Sent[0]);
    }

    [Fact]
    public async Task ASessionWaitsForThreeOfTheKeepAliveIntervalsItsNodeAnnouncesWhenThatIsLongerThanSessionIdleTimeout()
    {
        // A registry sending keep-alives every second, a client giving up after 0.3 s of silence: before, every healthy
        // session was cut (and its instance removed by the node) 0.3 s after each keep-alive.
        var stream = Sessions(keepAliveSeconds: 1);
        var opened = System.Diagnostics.Stopwatch.StartNew();
        await using var lease = await NewClient(o => o.SessionIdleTimeout = TimeSpan.FromMilliseconds(300)).RegisterAsync(Instance(), RegistrationMode.Session);

        // Silence from the lease event on: given up after three seconds, not 0.3.
        await stream.Closed.Task.WaitAsync(Scripted.Patience);
        Assert.InRange(opened.Elapsed, TimeSpan.FromSeconds(2.9), Scripted.Patience);
        Assert.IsType<TimeoutException>(lease.LastError?.InnerException);
    }

    [Fact]
    public async Task ASessionEndedAsReplacedStopsAndSaysSo()
    {
        var stream = Sessions();
        await using var lease = await NewClient().RegisterAsync(Instance(), RegistrationMode.Session);

        await stream.Current.Writer.WriteAsync("event: ended\ndata: {\"reason\":\"replaced\"}\n\n");

        await Eventually(() => lease.State == RegistryConnectionState.Replaced);
        Assert.False(lease.IsRegistered);
        Assert.Contains("replaced", lease.LastError?.Message, StringComparison.Ordinal);
        Clock.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal(1, Handler.Count("/v1/sessions"));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(5)] // the wall clock stepped forward meanwhile (NTP): the window is timed by the monotonic clock
    public async Task ASessionReplacedSoonAfterAnOpenThatGotNoAnswerIsOpenedAgainNotGivenUp(int wallClockStepMinutes)
    {
        var stream = Sessions();
        var sessions = Handler.Respond;
        // Node A takes the first open and never answers: it may still commit it, after the retry on node B.
        Handler.Respond = (r, ct) => r.Path == "/v1/sessions" && r.Uri.Host == Scripted.ServerA.Host && Handler.Count("/v1/sessions") == 1
            ? Scripted.HeldAsync(ct)
            : sessions(r, ct);
        var registering = NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance(), RegistrationMode.Session);
        await Handler.NextAsync(r => r.Path == "/v1/sessions");
        Clock.Advance(TimeSpan.FromSeconds(5)); // the request's timeout
        await using var lease = await registering.WaitAsync(Scripted.Patience);
        Assert.Equal(["registry-a", "registry-b"], Handler.Sent.Select(r => r.Uri.Host));

        // A's late commit replaces B's session (and A, its request gone, closes it at once).
        Clock.WallClockStep = TimeSpan.FromMinutes(wallClockStepMinutes);
        await stream.Current.Writer.WriteAsync("event: ended\ndata: {\"reason\":\"replaced\"}\n\n");

        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));
        await Handler.NextAsync(r => r.Path == "/v1/sessions" && Handler.Count("/v1/sessions") == 3);
        await Eventually(() => lease.IsRegistered);
        Assert.NotEqual(RegistryConnectionState.Replaced, lease.State);

        // Replaced again, with no open in doubt: someone else's now.
        await stream.Current.Writer.WriteAsync("event: ended\ndata: {\"reason\":\"replaced\"}\n\n");
        await Eventually(() => lease.State == RegistryConnectionState.Replaced);
    }

    [Fact]
    public async Task ASessionIsOpenedAgainOnceForEachEarlierOpenThatGotNoAnswerAndNoMore()
    {
        var stream = Sessions();
        var sessions = Handler.Respond;
        // Both nodes take the first opens and never answer; either may commit its open later.
        Handler.Respond = (r, ct) => r.Path == "/v1/sessions" && Handler.Count("/v1/sessions") <= 2
            ? Scripted.HeldAsync(ct)
            : sessions(r, ct);
        var registering = NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance(), RegistrationMode.Session);
        await Handler.NextAsync(r => r.Path == "/v1/sessions");
        Clock.Advance(TimeSpan.FromSeconds(5)); // A's timeout
        await Handler.NextAsync(r => r.Path == "/v1/sessions");
        Clock.Advance(TimeSpan.FromSeconds(5)); // B's
        await using var lease = await registering.WaitAsync(Scripted.Patience);
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10)); // the backoff; then the third open succeeds
        await Eventually(() => lease.IsRegistered);

        for (var late = 0; late < 2; late++)
        {
            var opens = Handler.Count("/v1/sessions");
            await stream.Current.Writer.WriteAsync("event: ended\ndata: {\"reason\":\"replaced\"}\n\n");
            await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));
            await Handler.NextAsync(r => r.Path == "/v1/sessions" && Handler.Count("/v1/sessions") == opens + 1);
            await Eventually(() => lease.IsRegistered);
        }

        // Both late opens are accounted for: a third 'replaced' is someone else's.
        await stream.Current.Writer.WriteAsync("event: ended\ndata: {\"reason\":\"replaced\"}\n\n");
        await Eventually(() => lease.State == RegistryConnectionState.Replaced);
        Assert.Equal(5, Handler.Count("/v1/sessions"));
    }

    [Fact]
    public async Task DrainingASessionLeaseSendsTheDrainWhileTheSessionIsStillOpenAndClosesItAfterwards()
    {
        bool? closedWhenTheDrainArrived = null;
        SessionStreams? stream = null;
        stream = Sessions(r =>
        {
            if (r.Path != "/v1/unregister" || r.Uri.Query.Length == 0)
            {
                return null;
            }

            closedWhenTheDrainArrived = stream!.Closed.Task.IsCompleted;
            // As the registry does: the drain removes the instance, which ends its session.
            stream.Current.Writer.TryWrite("event: ended\ndata: {\"reason\":\"unregistered\"}\n\n");
            return Scripted.Json(HttpStatusCode.OK, """{"delivered":3,"pending":0,"nodes":1,"complete":true}""");
        });
        var lease = await NewClient().RegisterAsync(Instance(), RegistrationMode.Session);
        // The lease holds the session: it waits on the stream for what comes next (past a keep-alive).
        var holding = stream.Waiting;
        await stream.Current.Writer.WriteAsync(": keep-alive\n\n");
        await holding.WaitAsync(Scripted.Patience);

        var result = await lease.DrainAsync(TimeSpan.FromSeconds(5));

        // Closed first, the session would have removed the instance without a drain, and the drain found nothing.
        Assert.False(closedWhenTheDrainArrived);
        Assert.Equal((3, true), (result.Delivered, result.Removed));
        await stream.Closed.Task.WaitAsync(Scripted.Patience);
        Assert.Equal(RegistryConnectionState.Stopped, lease.State);
        await lease.DisposeAsync();
        Assert.Equal(["?drain=5"], Handler.Sent.Where(r => r.Path == "/v1/unregister").Select(r => r.Uri.Query));
        Assert.Equal(1, Handler.Count("/v1/sessions"));
    }

    [Fact]
    public async Task DrainingASessionLeaseBetweenSessionsCancelsTheOpenInFlightBeforeTheDrain()
    {
        // A's node stopped; the lease is opening its session again on B when the host begins to stop. Were that open
        // to go on, its commit after the drain's removal would register the instance again.
        var reopening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var open = CancellationToken.None;
        bool? openCancelledWhenTheDrainArrived = null;
        var stream = Sessions(r =>
        {
            if (r.Path != "/v1/unregister" || r.Uri.Query.Length == 0)
            {
                return null;
            }

            openCancelledWhenTheDrainArrived = open.IsCancellationRequested;
            return Scripted.Json(HttpStatusCode.OK, """{"delivered":3,"pending":0,"nodes":1,"complete":true}""");
        });
        var sessions = Handler.Respond;
        Handler.Respond = (r, ct) =>
        {
            if (r.Path == "/v1/sessions" && r.Uri.Host == Scripted.ServerB.Host)
            {
                open = ct;
                reopening.TrySetResult();
                return Scripted.HeldAsync(ct);
            }

            return sessions(r, ct);
        };
        var lease = await NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance(), RegistrationMode.Session);
        stream.Current.Writer.Complete();
        await Eventually(() => lease.State == RegistryConnectionState.Unavailable);
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await reopening.Task.WaitAsync(Scripted.Patience);

        var result = await lease.DrainAsync(TimeSpan.FromSeconds(5));

        Assert.True(openCancelledWhenTheDrainArrived);
        Assert.Equal((3, true), (result.Delivered, result.Removed));
        Assert.Equal(2, Handler.Count("/v1/sessions"));
        await lease.DisposeAsync();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ALeaseWhoseSessionWasReplacedLeavesTheRegistrationThatReplacedItWhenDisposedOrDrained(bool drain)
    {
        var stream = Sessions();
        var lease = await NewClient().RegisterAsync(Instance(), RegistrationMode.Session);
        await stream.Current.Writer.WriteAsync("event: ended\ndata: {\"reason\":\"replaced\"}\n\n");
        await Eventually(() => lease.State == RegistryConnectionState.Replaced);

        if (drain)
        {
            Assert.Same(DrainResult.NotRegistered, await lease.DrainAsync(TimeSpan.FromSeconds(5)));
        }

        await lease.DisposeAsync();

        // The instance is someone else's now: removing it would deregister a live process.
        Assert.Equal(0, Handler.Count("/v1/unregister"));
    }

    [Theory]
    [InlineData("unregistered")]
    [InlineData("evicted")]
    public async Task ASessionEndedAsUnregisteredOrEvictedIsOpenedAgain(string reason)
    {
        var stream = Sessions();
        await using var lease = await NewClient().RegisterAsync(Instance(), RegistrationMode.Session);

        await stream.Current.Writer.WriteAsync($"event: ended\ndata: {{\"reason\":\"{reason}\"}}\n\n");
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));

        await Handler.NextAsync(r => r.Path == "/v1/sessions" && r != Handler.Sent[0]);
        await Eventually(() => lease.IsRegistered && Handler.Count("/v1/sessions") == 2);
    }

    /// <summary>
    /// The session's node died (its lease runs on there for the TTL, 15 s), and the open sent to another is answered
    /// 503 with a long Retry-After (a proxy in front of a restarting pool). Before, the broken session counted as no
    /// lease at all: the next open waited the whole two minutes, long after the instance was gone.
    /// </summary>
    [Fact]
    public async Task AnOpenAfterASessionBrokeIsRetriedWithinItsLeaseWhateverTheRetryAfter()
    {
        var refuse = false;
        var stream = Sessions(r => null);
        var sessions = Handler.Respond;
        Handler.Respond = (r, ct) => refuse && r.Path == "/v1/sessions"
            ? Task.FromResult(Scripted.Unavailable(new RetryConditionHeaderValue(TimeSpan.FromMinutes(2))))
            : sessions(r, ct);
        await using var lease = await NewClient().RegisterAsync(Instance(), RegistrationMode.Session);
        refuse = true;

        stream.Current.Writer.Complete();
        await Eventually(() => lease.State == RegistryConnectionState.Unavailable);
        var reopenIn = await Clock.PassNextDelayAsync(TimeSpan.FromMinutes(3));
        await Handler.NextAsync(r => r.Path == "/v1/sessions" && r != Handler.Sent[0]);
        var retryIn = await Clock.NextTimerAsync(d => !Scripted.IsRequestTimeout(d));

        Assert.True(reopenIn + retryIn <= TimeSpan.FromSeconds(15), $"reopened in {reopenIn}, then retried in {retryIn}");
    }

    [Fact]
    public async Task ARefusedSessionThrowsLikeARefusedRegistration()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Problem(HttpStatusCode.BadRequest, "The request is invalid"));

        await Assert.ThrowsAsync<RegistryClientException>(() => NewClient().RegisterAsync(Instance(), RegistrationMode.Session));
    }

    [Fact]
    public async Task AProbedRegistrationSendsTheProbeOnceAndNoHeartbeats()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow()));

        await using (var lease = await NewClient().RegisterAsync(Instance(), RegistrationMode.Probe(ProbeKind.Http, "/health z", TimeSpan.FromSeconds(10))))
        {
            Assert.True(lease.IsRegistered);
            Clock.Advance(TimeSpan.FromMinutes(5));
            Assert.Equal(0, Handler.Count("/v1/heartbeat"));
        }

        var register = Assert.Single(Handler.Sent, r => r.Path == "/v1/register");
        Assert.Equal("?ttl=30&probe=http&probePath=%2Fhealth%20z&probeInterval=10", register.Uri.Query);
        Assert.Equal(1, Handler.Count("/v1/unregister"));
    }

    [Fact]
    public void AProbeModeRefusesWhatTheRegistryWould()
    {
        Assert.Throws<ArgumentException>(() => RegistrationMode.Probe(ProbeKind.Tcp, "/healthz"));
        Assert.Throws<ArgumentException>(() => RegistrationMode.Probe(ProbeKind.Http, "healthz"));
        Assert.Throws<ArgumentOutOfRangeException>(() => RegistrationMode.Probe(ProbeKind.Http, interval: TimeSpan.FromMilliseconds(1500)));
        Assert.Equal("?ttl=5&probe=tcp", "?ttl=5" + RegistrationMode.Probe(ProbeKind.Tcp).RegisterQuery());
    }

    [Fact]
    public async Task AFakeClientThatKnowsOnlyHeartbeatsStillTakesTheHeartbeatMode()
    {
        IRegistryClient fake = new HeartbeatOnlyClient();

        await using var lease = await fake.RegisterAsync(Instance(), RegistrationMode.Heartbeat);
        Assert.True(lease.IsRegistered);
        await Assert.ThrowsAsync<NotSupportedException>(() => fake.RegisterAsync(Instance(), RegistrationMode.Session));
    }

    /// <summary>
    /// Answers every session with a stream the test writes (<see cref="SessionStreams.Current"/>), starting with its lease
    /// event; other calls by <paramref name="other"/> when it answers, else as a registry would.
    /// </summary>
    private SessionStreams Sessions(Func<SentRequest, HttpResponseMessage?>? other = null, int? keepAliveSeconds = null)
    {
        var streams = new SessionStreams();
        Handler.Respond = (r, ct) =>
        {
            if (r.Path != "/v1/sessions")
            {
                return Task.FromResult(other?.Invoke(r)
                    ?? new HttpResponseMessage(r.Path == "/v1/unregister" ? HttpStatusCode.NoContent : HttpStatusCode.NotFound));
            }

            var channel = streams.Open();
            channel.Writer.TryWrite(LeaseEvent.ReplaceLineEndings("\n"));
            var response = new HttpResponseMessage(HttpStatusCode.OK)
            {
                Content = new StreamContent(new ChannelStream(channel.Reader, streams.Closed, streams.Wait)),
            };
            response.Content.Headers.ContentType = new("text/event-stream");
            if (keepAliveSeconds is { } seconds)
            {
                response.Headers.Add("X-Registry-Keep-Alive", seconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }

            return Task.FromResult(response);
        };
        return streams;
    }

    private static async Task Eventually(Func<bool> condition)
    {
        using var deadline = new CancellationTokenSource(Scripted.Patience);
        while (!condition())
        {
            await Task.Delay(10, deadline.Token);
        }
    }

    private sealed class SessionStreams
    {
        private Channel<string>? _current;
        private TaskCompletionSource _waiting = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The stream of the session opened last.</summary>
        public Channel<string> Current => _current!;

        /// <summary>Completes when the client closes a session's stream.</summary>
        public TaskCompletionSource Closed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Channel<string> Open() => _current = Channel.CreateUnbounded<string>();

        /// <summary>Completes when the client next waits on a stream with nothing left to read (it holds the session).</summary>
        public Task Waiting => Volatile.Read(ref _waiting).Task;

        public void Wait() => Interlocked.Exchange(ref _waiting, new(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
    }

    /// <summary>A response body fed by the test, line by line; it ends when the channel completes.</summary>
    private sealed class ChannelStream(ChannelReader<string> reader, TaskCompletionSource closed, Action waiting) : Stream
    {
        private ReadOnlyMemory<byte> _pending;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_pending.IsEmpty)
            {
                if (!reader.TryRead(out var text))
                {
                    waiting();
                    if (!await reader.WaitToReadAsync(cancellationToken) || !reader.TryRead(out text))
                    {
                        return 0;
                    }
                }

                _pending = Encoding.UTF8.GetBytes(text);
            }

            var count = Math.Min(buffer.Length, _pending.Length);
            _pending[..count].CopyTo(buffer);
            _pending = _pending[count..];
            return count;
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            closed.TrySetResult();
            base.Dispose(disposing);
        }
    }

    private sealed class HeartbeatOnlyClient : IRegistryClient
    {
        public Task<RegistrationLease> RegisterAsync(ProviderInstance instance, CancellationToken cancellationToken = default) =>
            Task.FromResult(RegistrationLease.CreateFixed(instance, TimeSpan.FromSeconds(30)));

        public Task<RegistrySubscription> SubscribeAsync(IEnumerable<SubscriptionEntry> subscribes, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public Task<RegistrySubscription> SubscribeAsync(SubscriptionEntry entry, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public Task<RegistryAnswer?> GetServiceAsync(string application, string? ifNoneMatch = null, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();
    }
}
