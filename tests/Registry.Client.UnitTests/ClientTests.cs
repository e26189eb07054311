using System.Net;
using Microsoft.Extensions.Options;
using Registry.Client.UnitTests.Infrastructure;

namespace Registry.Client.UnitTests;

public sealed class ClientTests : ScriptedTest
{
    [Fact]
    public async Task ATokenIsSentAsABearerOnEveryRequest()
    {
        Handler.Respond = (r, ct) => r.Path switch
        {
            "/v1/register" or "/v1/heartbeat" => Task.FromResult(Scripted.Lease(3, Clock.GetUtcNow())),
            "/v1/subscribe" when r.Uri.Query.Length > 0 => Scripted.HeldAsync(ct),
            "/v1/subscribe" => Task.FromResult(Scripted.Answer("v1")),
            "/v1/unregister" => Task.FromResult(new HttpResponseMessage(HttpStatusCode.NoContent)),
            _ => Task.FromResult(Scripted.Answer("v1")),
        };
        var client = NewClient(o =>
        {
            o.Token = "rgt_0123456789";
            o.Ttl = TimeSpan.FromSeconds(3);
        });

        var lease = await client.RegisterAsync(Instance());
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));
        await Handler.NextAsync(r => r.Path == "/v1/heartbeat");
        var subscription = await client.SubscribeAsync(new SubscriptionEntry("provider_test"));
        await Handler.NextAsync(r => r.Path == "/v1/subscribe" && r.Uri.Query.Length > 0);
        await client.GetServiceAsync("provider_test");
        await subscription.DisposeAsync();
        await lease.DisposeAsync();

        Assert.Equal(
            ["/v1/register", "/v1/heartbeat", "/v1/subscribe", "/v1/services/provider_test", "/v1/unregister"],
            Handler.Sent.Select(r => r.Path).Distinct());
        Assert.All(Handler.Sent, r => Assert.Equal("Bearer rgt_0123456789", r.Authorization));
    }

    [Fact]
    public async Task ATokenProviderIsAskedForEachRequestSoARotatedTokenIsUsed()
    {
        var generation = 0;
        Handler.Respond = (r, ct) => Task.FromResult(Scripted.Answer("v1"));
        var client = NewClient(o => o.TokenProvider = _ => ValueTask.FromResult<string?>($"projected-jwt-{Interlocked.Increment(ref generation)}"));

        await client.GetServiceAsync("provider_test");
        await client.GetServiceAsync("provider_test");

        Assert.Equal(["Bearer projected-jwt-1", "Bearer projected-jwt-2"], Handler.Sent.Select(r => r.Authorization));
    }

    [Fact]
    public async Task ATokenProviderThatFailsIsAnOutageNotARefusal()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow()));
        var fail = true;
        var client = NewClient(o => o.TokenProvider = _ => fail ? throw new IOException("the token file is being replaced") : ValueTask.FromResult<string?>("rgt_new"));

        await using var lease = await client.RegisterAsync(Instance());
        Assert.Equal(RegistryConnectionState.Unavailable, lease.State);
        Assert.IsType<RegistryUnavailableException>(lease.LastError);
        Assert.Empty(Handler.Sent);

        fail = false;
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(10));
        await Handler.NextAsync(r => r.Path == "/v1/register");
        Assert.Equal("Bearer rgt_new", Handler.Sent[0].Authorization);
    }

    [Fact]
    public async Task ATokenProviderThatNeverAnswersIsAnOutageAfterTheRequestTimeout()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Answer("v1"));
        var never = new TaskCompletionSource<string?>();
        CancellationToken given = default;
        var client = NewClient(o => o.TokenProvider = cancellationToken =>
        {
            given = cancellationToken;
            return new ValueTask<string?>(never.Task); // heeds no token
        });

        var call = client.GetServiceAsync("provider_test");
        Clock.Advance(await Clock.NextTimerAsync(Scripted.IsRequestTimeout));

        var e = await Assert.ThrowsAsync<RegistryUnavailableException>(() => call.WaitAsync(Scripted.Patience));
        Assert.Contains("token provider did not answer within 5 s", e.Message, StringComparison.Ordinal);
        Assert.True(given.IsCancellationRequested);
        Assert.Empty(Handler.Sent);
    }

    /// <summary>
    /// A token provider that heeds no token and fails after its caller gave up (a lease or subscription disposed, a
    /// request cancelled). Before, only a provider that outlived the request timeout was observed.
    /// </summary>
    [Fact]
    public async Task ATokenProviderThatFailsAfterItsCallerGaveUpLeavesNoUnobservedTaskException()
    {
        const string Detail = "failed-after-its-caller-gave-up";
        using var unobserved = new UnobservedExceptions(Detail);
        var (release, provided) = await GiveUpAsync(configure => NewClient(configure));
        release.SetResult();
        using var deadline = new CancellationTokenSource(Scripted.Patience);
        // Collected once it has failed, and finalized: nothing else says when.
        while (IsAlive(provided))
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            await Task.Delay(10, deadline.Token);
        }

        GC.Collect();
        GC.WaitForPendingFinalizers();
        Assert.Empty(unobserved.Seen);

        // Apart, so nothing on the test's frame keeps the provider's task alive when the collector runs.
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        static async Task<(TaskCompletionSource Release, WeakReference<Task<string?>> Provided)> GiveUpAsync(Func<Action<RegistryClientOptions>, RegistryClient> newClient)
        {
            var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            // The client (kept by the test's base) keeps its provider: it holds the task only weakly.
            var provided = new WeakReference<Task<string?>>(Task.FromResult<string?>(null));
            var client = newClient(o => o.TokenProvider = _ =>
            {
                var failing = FailLaterAsync(release.Task);
                provided.SetTarget(failing);
                asked.TrySetResult();
                return new ValueTask<string?>(failing);
            });
            using var giveUp = new CancellationTokenSource();
            var call = client.GetServiceAsync("provider_test", cancellationToken: giveUp.Token);
            await asked.Task;
            await giveUp.CancelAsync();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);
            return (release, provided);
        }

        // Apart too: a Debug build keeps even a discarded out variable on the test's frame.
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        static bool IsAlive(WeakReference<Task<string?>> provided) => provided.TryGetTarget(out _);

        static async Task<string?> FailLaterAsync(Task release)
        {
            await release;
            throw new IOException(Detail);
        }
    }

    [Fact]
    public async Task GetServiceAsksOnceAndAnswersNullWhenTheVersionHeldIsCurrent()
    {
        Handler.Respond = (r, _) => Task.FromResult(r.IfNoneMatch == "\"v1\""
            ? new HttpResponseMessage(HttpStatusCode.NotModified)
            : Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80")));
        var client = NewClient();

        var answer = await client.GetServiceAsync("provider_test");
        var unchanged = await client.GetServiceAsync("provider_test", ifNoneMatch: "v1");

        Assert.Equal("10.0.0.1:80", Assert.Single(answer!.Endpoints).Addr);
        Assert.Null(unchanged);
        // A one-shot: the conditional request asks not to be held.
        Assert.Equal("?wait=0", Handler.Sent[1].Uri.Query);
        Assert.Equal(HttpMethod.Get, Handler.Sent[1].Method);
    }

    [Fact]
    public async Task A503WhoseJsonBodyHasANonNumericStatusStillFailsOverToTheNextNode()
    {
        // Not the registry's problem document: a proxy's own JSON (a Kubernetes Status says "status":"Failure").
        Handler.Respond = (r, _) => Task.FromResult(r.Uri.Host == Scripted.ServerA.Host
            ? Scripted.Json(HttpStatusCode.ServiceUnavailable, """{"kind":"Status","status":"Failure","message":"upstream down"}""")
            : Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80")));
        var client = NewClient(null, Scripted.ServerA, Scripted.ServerB);

        var answer = await client.GetServiceAsync("provider_test");

        Assert.Equal("v1", answer!.Version);
        Assert.Equal([Scripted.ServerA.Host, Scripted.ServerB.Host], Handler.Sent.Select(r => r.Uri.Host));
    }

    [Fact]
    public async Task AResilienceHandlersTimeoutOnTheFirstNodeFailsOverToTheNext()
    {
        // An app-wide resilience pipeline gives up on a node with its own exception, not an HttpRequestException.
        Handler.Respond = (r, _) => r.Uri.Host == Scripted.ServerA.Host
            ? throw new Polly.Timeout.TimeoutRejectedException("The operation didn't complete within the allowed timeout of '00:00:10'.")
            : Task.FromResult(Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80")));
        var client = NewClient(null, Scripted.ServerA, Scripted.ServerB);

        var answer = await client.GetServiceAsync("provider_test");

        Assert.Equal("v1", answer!.Version);
        Assert.Equal([Scripted.ServerA.Host, Scripted.ServerB.Host], Handler.Sent.Select(r => r.Uri.Host));
    }

    [Fact]
    public void TheExceptionsFormAHierarchyWhereAnOutageIsNotARefusal()
    {
        Assert.False(typeof(RegistryClientException).IsAssignableFrom(typeof(RegistryUnavailableException)));
        Assert.True(typeof(RegistryException).IsAssignableFrom(typeof(RegistryUnavailableException)));
        Assert.True(typeof(RegistryClientException).IsAssignableFrom(typeof(RegistryAccessDeniedException)));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(500)]
    public void APollWaitUnderASecondIsRejected(int milliseconds)
    {
        var options = Scripted.Options();
        options.PollWait = TimeSpan.FromMilliseconds(milliseconds);
        using var http = new HttpClient();

        var error = Assert.Throws<OptionsValidationException>(() => new RegistryClient(http, options));

        Assert.Contains(error.Failures, f => f.StartsWith("PollWait:", StringComparison.Ordinal));
    }

    [Fact]
    public void ATokenAndATokenProviderTogetherOrATokenWithALineBreakAreRejectedWithoutEchoingTheToken()
    {
        var options = Scripted.Options();
        options.Token = "rgt_secret\r\nX-Injected: 1";
        options.TokenProvider = _ => ValueTask.FromResult<string?>("rgt_other");
        using var http = new HttpClient();

        var error = Assert.Throws<OptionsValidationException>(() => new RegistryClient(http, options));

        Assert.Equal(2, error.Failures.Count(f => f.StartsWith("Token:", StringComparison.Ordinal)));
        Assert.DoesNotContain("rgt_secret", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AFakeClientCanHandOutFixedLeasesAndSubscriptionsThatSendNothing()
    {
        var answer = new RegistryAnswer("v1", [Instance()]);
        IRegistryClient fake = new FakeClient(answer);

        await using var lease = await fake.RegisterAsync(Instance());
        await using var subscription = await fake.SubscribeAsync(new SubscriptionEntry("provider_test"));

        Assert.True(lease.IsRegistered);
        Assert.Equal(TimeSpan.FromSeconds(30), lease.Ttl);
        Assert.Equal(RegistryConnectionState.Connected, lease.State);
        Assert.Same(answer, await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience));
        Assert.Empty(Handler.Sent);
    }

    private sealed class FakeClient(RegistryAnswer answer) : IRegistryClient
    {
        public Task<RegistrationLease> RegisterAsync(ProviderInstance instance, CancellationToken cancellationToken = default) =>
            Task.FromResult(RegistrationLease.CreateFixed(instance, TimeSpan.FromSeconds(30)));

        public Task<RegistrySubscription> SubscribeAsync(IEnumerable<SubscriptionEntry> subscribes, CancellationToken cancellationToken = default) =>
            Task.FromResult(RegistrySubscription.CreateFixed(subscribes, answer));

        public Task<RegistrySubscription> SubscribeAsync(SubscriptionEntry entry, CancellationToken cancellationToken = default) =>
            SubscribeAsync([entry], cancellationToken);

        public Task<RegistryAnswer?> GetServiceAsync(string application, string? ifNoneMatch = null, CancellationToken cancellationToken = default) =>
            Task.FromResult<RegistryAnswer?>(answer);
    }
}
