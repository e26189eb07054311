using System.Net;
using Microsoft.Extensions.Logging;
using Registry.Client.UnitTests.Infrastructure;

namespace Registry.Client.UnitTests;

public sealed class SubscriptionTests : ScriptedTest
{
    [Fact]
    public async Task ASubscriptionLoopOutlivesAnExceptionNoRegistryTypeWouldThrowAndLogsOneWarning()
    {
        var failures = 3;
        Handler.Respond = (_, _) => Interlocked.Decrement(ref failures) >= 0
            ? throw new InvalidOperationException("thrown by a handler the app added")
            : Task.FromResult(Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80")));
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry("provider_test"));

        for (var i = 0; i < 3; i++)
        {
            await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(30));
            if (i == 0)
            {
                Assert.Equal(RegistryConnectionState.Unavailable, subscription.State);
                // Every node was tried: an outage, with what the handler threw inside.
                Assert.IsType<InvalidOperationException>(Assert.IsType<RegistryUnavailableException>(subscription.LastError).InnerException);
            }
        }

        var first = await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
        Assert.Equal("v1", first.Version);
        Assert.Equal(RegistryConnectionState.Connected, subscription.State);
        Assert.Null(subscription.LastError);
        Assert.Single(Logs.Entries, e => e.Level >= LogLevel.Warning);
        Assert.Contains(Logs.Entries, e => e.Message.Contains("reachable again", StringComparison.Ordinal));
    }

    [Fact]
    public async Task CacheFilesNoSubscriptionWroteForTheRetentionAreDeletedAndARunningSubscriptionKeepsItsOwnFresh()
    {
        var directory = Directory.CreateTempSubdirectory("registry-client-cache-").FullName;
        try
        {
            // Ages by the client's clock (which stands still here).
            var longAgo = Clock.GetUtcNow().UtcDateTime.AddDays(-31);
            string Write(string name, DateTime written)
            {
                var path = Path.Combine(directory, name);
                File.WriteAllText(path, "{}");
                File.SetLastWriteTimeUtc(path, written);
                return path;
            }

            // A group service discovery has since regrouped, a write torn by a crash, and a subscription of last month.
            var regrouped = Write("registry-subscription-00000000000000aa.json", longAgo);
            var torn = Write("registry-subscription-00000000000000aa.json.0123.tmp", longAgo);
            var recent = Write("registry-subscription-00000000000000bb.json", Clock.GetUtcNow().UtcDateTime.AddDays(-29));
            var foreign = Write("notes.txt", longAgo);
            // Every poll is answered at once, unchanged (nothing rewrites the file for a change), until the registry goes down.
            var down = false;
            Handler.Respond = (_, _) => down
                ? throw new HttpRequestException("Connection refused")
                : Task.FromResult(Scripted.Answer("v1", ("a", "http", "10.0.0.1:80")));

            await using var subscription = await NewClient(o => o.CacheDirectory = directory).SubscribeAsync(new SubscriptionEntry("a"));

            Assert.False(File.Exists(regrouped));
            Assert.False(File.Exists(torn));
            Assert.True(File.Exists(recent));
            Assert.True(File.Exists(foreign));

            // The pause after the second, unchanged answer: the first is on disk by then.
            await Clock.NextTimerAsync(d => d == TimeSpan.FromSeconds(1));
            var own = subscription.CacheFile!;
            File.SetLastWriteTimeUtc(own, longAgo);
            // Fifteen minutes later, an unchanged answer writes the file again...
            Clock.Advance(TimeSpan.FromMinutes(15));
            await Clock.NextTimerAsync(d => d == TimeSpan.FromSeconds(1));
            Assert.True(File.GetLastWriteTimeUtc(own) > DateTime.UtcNow.AddDays(-1), $"{File.GetLastWriteTimeUtc(own):O}");

            // ...and so does a failed poll in an outage, when a restart would need the file most.
            File.SetLastWriteTimeUtc(own, longAgo);
            down = true;
            Clock.Advance(TimeSpan.FromMinutes(15));
            await Clock.NextTimerAsync(d => d > TimeSpan.Zero && d <= TimeSpan.FromSeconds(1) && !Scripted.IsRequestTimeout(d) && d != TimeSpan.FromSeconds(1));
            Assert.True(File.GetLastWriteTimeUtc(own) > DateTime.UtcNow.AddDays(-1), $"{File.GetLastWriteTimeUtc(own):O}");
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    [Fact]
    public async Task ARefusalNobodyAwaitedLeavesNoUnobservedTaskException()
    {
        const string Detail = "refused-and-never-awaited";
        using var unobserved = new UnobservedExceptions(Detail);
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Problem(HttpStatusCode.Forbidden, "Forbidden", $$""","detail":"{{Detail}}" """));
        await RefuseAndForgetAsync(NewClient());
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();

        Assert.Empty(unobserved.Seen);

        // Apart, so nothing on this frame keeps the subscription's tasks alive when the collector runs.
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
        static async Task RefuseAndForgetAsync(RegistryClient client)
        {
            var subscription = await client.SubscribeAsync(new SubscriptionEntry("provider_test"));
            await subscription.Ended.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            await subscription.DisposeAsync();
        }
    }

    [Fact]
    public async Task ARefusedSubscriptionEndsEveryWatcherWithTheRefusal()
    {
        var refuse = new TaskCompletionSource<HttpResponseMessage>();
        Handler.Respond = (_, _) => refuse.Task;
        var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry("provider_test"));
        var watcher = Task.Run(async () =>
        {
            await foreach (var answer in subscription.WatchAsync())
            {
            }
        });
        await Handler.NextAsync();

        refuse.SetResult(Scripted.Problem(HttpStatusCode.BadRequest, "One or more validation errors occurred.", ""","errors":{"subscribes[0].protocol":["must match ^[a-z][a-z0-9+.-]{0,31}$"]}"""));

        var error = await Assert.ThrowsAsync<RegistryClientException>(() => watcher.WaitAsync(Scripted.Patience));
        Assert.Equal(HttpStatusCode.BadRequest, error.StatusCode);
        Assert.Contains("subscribes[0].protocol", error.Problem!.Errors.Keys);
        await Assert.ThrowsAsync<RegistryClientException>(() => subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience));
        Assert.Equal(RegistryConnectionState.Refused, subscription.State);
        // A watcher that comes late hears it too, rather than waiting for answers that will never come.
        await Assert.ThrowsAsync<RegistryClientException>(async () =>
        {
            await foreach (var answer in subscription.WatchAsync().WithCancellation(new CancellationTokenSource(Scripted.Patience).Token))
            {
            }
        });
        await subscription.DisposeAsync();
    }

    /// <summary>
    /// A 401 is asked once more, a second later, at the same node (a token made on another node takes up to a second to
    /// reach this one: before, a discovery pool's new subscription that polled within it ended for good), then ends the
    /// subscription: it is neither failed over nor retried as an outage.
    /// </summary>
    [Fact]
    public async Task A401IsAskedOnceMoreASecondLaterThenEndsTheSubscription()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Problem(HttpStatusCode.Unauthorized, "Unauthorized", ""","detail":"The token is unknown, expired or revoked." """));
        await using var subscription = await NewClient(o => o.Token = "rgt_secret-that-must-not-leak", Scripted.ServerA, Scripted.ServerB)
            .SubscribeAsync(new SubscriptionEntry("provider_test"));

        Assert.InRange(await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(2)), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1.5));
        var error = await Assert.ThrowsAsync<RegistryAccessDeniedException>(() => subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience));

        Assert.True(error.IsAuthenticationFailure);
        Assert.Equal("The token is unknown, expired or revoked.", error.Problem!.Detail);
        Assert.Equal(2, Handler.Sent.Count);
        Assert.All(Handler.Sent, sent => Assert.Equal(Scripted.ServerA.Host, sent.Uri.Host));
        Assert.DoesNotContain("rgt_secret", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(Logs.Entries, e => e.Message.Contains("rgt_secret", StringComparison.Ordinal) || (e.Exception?.ToString().Contains("rgt_secret", StringComparison.Ordinal) ?? false));
        Assert.Equal(RegistryConnectionState.Refused, subscription.State);
    }

    /// <summary>
    /// A poll held with a token that is revoked during the hold (a rotation: the app's token provider already gives the
    /// new one) is answered 401. Before, that ended the subscription for good; it is now asked again at once, once.
    /// </summary>
    [Fact]
    public async Task A401ToAHeldPollIsAskedAgainOnceWithTheCredentialAsItIsNow()
    {
        var token = "rgt_old";
        var revoked = new TaskCompletionSource<HttpResponseMessage>(TaskCreationOptions.RunContinuationsAsynchronously);
        Handler.Respond = (r, ct) => !r.Uri.Query.Contains("version", StringComparison.Ordinal)
            ? Task.FromResult(Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80")))
            : r.Authorization == "Bearer rgt_old" ? revoked.Task : Scripted.HeldAsync(ct);
        await using var subscription = await NewClient(o => o.TokenProvider = _ => ValueTask.FromResult<string?>(token)).SubscribeAsync(new SubscriptionEntry("provider_test"));
        await Handler.NextAsync(r => r.Uri.Query.Contains("version=v1", StringComparison.Ordinal));

        // Rotated: the provider gives the new token, and the poll held with the old one is answered 401.
        token = "rgt_new";
        revoked.SetResult(Scripted.Problem(HttpStatusCode.Unauthorized, "Unauthorized", ""","detail":"The token has been revoked." """));
        await Handler.NextAsync(r => r.Authorization == "Bearer rgt_new" && r.Uri.Query.Contains("version=v1", StringComparison.Ordinal));
        Assert.NotEqual(RegistryConnectionState.Refused, subscription.State);
    }

    [Theory]
    [InlineData(HttpStatusCode.RequestTimeout, "text/html", "<html>408 Request Time-out</html>")]
    [InlineData(HttpStatusCode.NotFound, "text/html", "<html>404 Not Found</html>")]
    [InlineData(HttpStatusCode.BadRequest, "text/plain", "Request Header Or Cookie Too Large")]
    [InlineData(HttpStatusCode.MisdirectedRequest, "application/problem+json", """{"title":"Misdirected Request","status":421}""")]
    public async Task AProxysClientErrorIsAnOutageNotTheEndOfTheSubscription(HttpStatusCode status, string mediaType, string body)
    {
        var polls = 0;
        Handler.Respond = (_, ct) => Interlocked.Increment(ref polls) switch
        {
            1 => Task.FromResult(Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80"))),
            2 => Task.FromResult(Scripted.Json(status, body, mediaType)),
            3 => Task.FromResult(Scripted.Answer("v2", ("provider_test", "http", "10.0.0.2:80"))),
            _ => Scripted.HeldAsync(ct),
        };
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry("provider_test"));
        var v2 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        subscription.Changed += (_, e) =>
        {
            if (e.Current.Version == "v2")
            {
                v2.TrySetResult();
            }
        };
        await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);

        // Backed off as an outage, then polled again: not refused.
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(30));
        await v2.Task.WaitAsync(Scripted.Patience);

        Assert.Equal(RegistryConnectionState.Connected, subscription.State);
    }

    [Fact]
    public async Task AChangeTokenCallbackThatThrowsSkipsNoHandlerAndDoesNotStopTheSubscription()
    {
        var polls = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Handler.Respond = async (_, ct) => Interlocked.Increment(ref polls) switch
        {
            1 => Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80")),
            2 => await release.Task.ContinueWith(_ => Scripted.Answer("v2", ("provider_test", "http", "10.0.0.2:80")), TaskScheduler.Default),
            3 => Scripted.Answer("v3", ("provider_test", "http", "10.0.0.3:80")),
            _ => await Scripted.HeldAsync(ct),
        };
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry("provider_test"));
        await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
        using var callback = subscription.GetChangeToken().RegisterChangeCallback(_ => throw new InvalidOperationException("an app's callback"), null);
        var seen = new List<string>();
        var v3 = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        subscription.Changed += (_, e) =>
        {
            seen.Add(e.Current.Version);
            if (e.Current.Version == "v3")
            {
                v3.TrySetResult();
            }
        };

        release.SetResult();
        await v3.Task.WaitAsync(Scripted.Patience);

        // The answer whose token's callback threw still reached the handlers, and the loop went on.
        Assert.Equal(["v2", "v3"], seen);
        Assert.Equal(RegistryConnectionState.Connected, subscription.State);
        Assert.Contains(Logs.Entries, e => e.Level == LogLevel.Warning && e.Exception is AggregateException);
    }

    [Fact]
    public async Task DisposingEndsTheWatchersAndNeverThrows()
    {
        Handler.Respond = (r, ct) => r.Uri.Query.Contains("version", StringComparison.Ordinal)
            ? FailOddlyOnCancellationAsync(ct)
            : Task.FromResult(Scripted.Answer("v1"));
        var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry("provider_test"));
        var watched = new List<string>();
        var watching = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var watcher = Task.Run(async () =>
        {
            await foreach (var answer in subscription.WatchAsync())
            {
                watched.Add(answer.Version);
                watching.TrySetResult();
            }
        });
        await Handler.NextAsync(r => r.Uri.Query.Contains("version", StringComparison.Ordinal));
        await watching.Task.WaitAsync(Scripted.Patience); // the watcher is under way before the disposal

        await subscription.DisposeAsync();

        await watcher.WaitAsync(Scripted.Patience);
        Assert.Equal(["v1"], watched);
        Assert.Equal(RegistryConnectionState.Stopped, subscription.State);
    }

    [Fact]
    public async Task ARetryAfterLongerThanTheBackoffCapIsHonoured()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Unavailable(new System.Net.Http.Headers.RetryConditionHeaderValue(TimeSpan.FromSeconds(60))));
        await using var subscription = await NewClient(o => o.RetryMaxDelay = TimeSpan.FromSeconds(5)).SubscribeAsync(new SubscriptionEntry("provider_test"));

        var delay = await Clock.PassNextDelayAsync(TimeSpan.FromMinutes(5));

        // At least what the registry asked, plus up to a fifth, so clients told the same time do not return together.
        Assert.InRange(delay, TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(72));
        var error = Assert.IsType<RegistryUnavailableException>(subscription.LastError);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, error.StatusCode);
        Assert.Equal("The database cannot take a write", error.Problem?.Title);
        Assert.Null(subscription.Current);
    }

    [Fact]
    public async Task AnUnchangedAnswerAtOnceMakesTheNextPollWaitInsteadOfSpinning()
    {
        // Something between client and registry drops the version: every poll comes back at once, unchanged.
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Answer("v1"));
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry("provider_test"));
        await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
        await Handler.NextAsync(r => r.Uri.Query.Contains("version=v1", StringComparison.Ordinal));

        var pause = await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(TimeSpan.FromSeconds(1), pause);
    }

    [Fact]
    public async Task ACacheFileThatCannotBeWrittenIsTriedAgainOnlyWithANewAnswerOrAfterTheRefreshNotOnEveryPoll()
    {
        // The cache directory's place is taken by a file: every write fails.
        var blocked = Path.GetTempFileName();
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80")));
        try
        {
            await using var subscription = await NewClient(o => o.CacheDirectory = blocked).SubscribeAsync(new SubscriptionEntry("provider_test"));
            await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);

            // Five unchanged answers (each followed by the pause of an unchanged answer at once).
            for (var i = 0; i < 5; i++)
            {
                Clock.Advance(await Clock.NextTimerAsync(d => d == TimeSpan.FromSeconds(1)));
            }

            Assert.Single(Logs.Entries, e => e.Level == LogLevel.Warning && e.Message.StartsWith("Could not write the cache file", StringComparison.Ordinal));
            Assert.Equal(RegistryConnectionState.Connected, subscription.State);
        }
        finally
        {
            File.Delete(blocked);
        }
    }

    /// <summary>
    /// A node cut off from its database answers from memory, and holds polls like any other: before, a stale answer no
    /// older than the one held was taken and the next poll went to the same node, so a consumer without writes of its
    /// own never heard of a change made through the other nodes for as long as the cut lasted.
    /// </summary>
    [Fact]
    public async Task AfterAStaleAnswerTheNextPollStartsAtTheNextNode()
    {
        Handler.Respond = (r, ct) =>
        {
            var polling = r.Uri.Query.Contains("version", StringComparison.Ordinal);
            if (r.Uri.Host == Scripted.ServerA.Host)
            {
                if (polling)
                {
                    return Scripted.HeldAsync(ct);
                }

                var stale = Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80"));
                stale.Headers.Add("X-Registry-Stale", "true");
                stale.Headers.Age = TimeSpan.FromSeconds(5);
                return Task.FromResult(stale);
            }

            return r.Uri.Query.Contains("version=v2", StringComparison.Ordinal)
                ? Scripted.HeldAsync(ct)
                : Task.FromResult(Scripted.Answer("v2", ("provider_test", "http", "10.0.0.2:80")));
        };
        await using var subscription = await NewClient(null, Scripted.ServerA, Scripted.ServerB).SubscribeAsync(new SubscriptionEntry("provider_test"));
        await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);

        await Handler.NextAsync(r => r.Uri.Host == Scripted.ServerB.Host && r.Uri.Query.Contains("version=v2", StringComparison.Ordinal));
        Assert.Equal("10.0.0.2:80", Assert.Single(subscription.Current!.Endpoints).Addr);
    }

    /// <summary>
    /// A node's address answers 2xx with something that is not the registry (a default backend's page): before, it
    /// stayed the preferred server, and every retry started at it again, never reaching the next one.
    /// </summary>
    [Fact]
    public async Task AnUnreadableAnswerSendsTheRetryToTheNextNode()
    {
        Handler.Respond = (r, ct) => r.Uri.Host == Scripted.ServerA.Host
            ? Task.FromResult(Scripted.Json(HttpStatusCode.OK, "<html>down for maintenance</html>", "text/html"))
            : r.Uri.Query.Contains("version=v2", StringComparison.Ordinal)
                ? Scripted.HeldAsync(ct)
                : Task.FromResult(Scripted.Answer("v2", ("provider_test", "http", "10.0.0.2:80")));
        await using var subscription = await NewClient(null, Scripted.ServerA, Scripted.ServerB).SubscribeAsync(new SubscriptionEntry("provider_test"));

        var backoff = await Clock.NextTimerAsync(d => d > TimeSpan.Zero && d <= TimeSpan.FromSeconds(1) && !Scripted.IsRequestTimeout(d));
        Clock.Advance(backoff);
        await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
        Assert.Equal("10.0.0.2:80", Assert.Single(subscription.Current!.Endpoints).Addr);
    }

    [Fact]
    public async Task AfterAFailoverAStaleNodesOlderAnswerIsLeftUntilANodeAnswersCurrently()
    {
        // A serves v2; then A dies, and B, cut off from the database two minutes ago (before A answered), still holds v1.
        var phase = 0;
        var cutOff = Clock.GetUtcNow() - TimeSpan.FromMinutes(2);
        Handler.Respond = (r, ct) =>
        {
            var polling = r.Uri.Query.Contains("version", StringComparison.Ordinal);
            if (r.Uri.Host == Scripted.ServerA.Host)
            {
                return phase == 0
                    ? polling ? Scripted.HeldAsync(ct) : Task.FromResult(Scripted.Answer("v2", ("provider_test", "http", "10.0.0.2:80")))
                    : throw new HttpRequestException("Connection refused");
            }

            if (phase == 1)
            {
                var stale = Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80"));
                stale.Headers.Add("X-Registry-Stale", "true");
                stale.Headers.Age = Clock.GetUtcNow() - cutOff;
                return Task.FromResult(stale);
            }

            return r.Uri.Query.Contains("version=v3", StringComparison.Ordinal)
                ? Scripted.HeldAsync(ct)
                : Task.FromResult(Scripted.Answer("v3", ("provider_test", "http", "10.0.0.3:80")));
        };
        var directory = Directory.CreateTempSubdirectory("registry-client-cache-").FullName;
        await using var subscription = await NewClient(o => o.CacheDirectory = directory, Scripted.ServerA, Scripted.ServerB).SubscribeAsync(new SubscriptionEntry("provider_test"));
        await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
        await Handler.NextAsync(r => r.Uri.Host == Scripted.ServerA.Host && r.Uri.Query.Contains("version=v2", StringComparison.Ordinal));

        // A's held poll times out, and the client fails over to B.
        phase = 1;
        Clock.Advance(TimeSpan.FromSeconds(41.875));
        await Handler.NextAsync(r => r.Uri.Host == Scripted.ServerB.Host);
        var backoff = await Clock.NextTimerAsync(d => d > TimeSpan.Zero && d <= TimeSpan.FromSeconds(1) && !Scripted.IsRequestTimeout(d));
        Assert.Equal("v2", subscription.Current!.Version);
        Assert.Equal(RegistryConnectionState.Unavailable, subscription.State);
        Assert.Contains("cut off from its database", subscription.LastError!.Message, StringComparison.Ordinal);

        // Asked again (A still down) a quarter of an hour later, B answers the same at once: the client backs off
        // rather than spin on it, and writes the answer it holds again (a restart now would start from it).
        var written = File.GetLastWriteTimeUtc(subscription.CacheFile!);
        File.SetLastWriteTimeUtc(subscription.CacheFile!, written.AddDays(-31));
        Clock.Advance(TimeSpan.FromMinutes(15));
        await Handler.NextAsync(r => r.Uri.Host == Scripted.ServerB.Host);
        backoff = await Clock.NextTimerAsync(d => d >= TimeSpan.FromSeconds(1) && d <= TimeSpan.FromSeconds(2) && !Scripted.IsRequestTimeout(d));
        Assert.Equal("v2", subscription.Current!.Version);
        Assert.True(File.GetLastWriteTimeUtc(subscription.CacheFile!) >= written, "the cache file was not written again");
        Assert.Contains("10.0.0.2:80", await File.ReadAllTextAsync(subscription.CacheFile!), StringComparison.Ordinal);

        // B reaches its database again: its answer is current, and taken.
        phase = 2;
        Clock.Advance(backoff);
        await Handler.NextAsync(r => r.Uri.Query.Contains("version=v3", StringComparison.Ordinal));
        Assert.Equal("10.0.0.3:80", Assert.Single(subscription.Current!.Endpoints).Addr);
        Assert.Equal(RegistryConnectionState.Connected, subscription.State);
        await subscription.DisposeAsync();
        Directory.Delete(directory, recursive: true);
    }

    [Fact]
    public async Task AfterARestartDuringAFailoverAStaleNodesAnswerOlderThanTheCacheFilesIsLeft()
    {
        // A serves v2 and the subscription's file is written; B was cut off from the database before that, holding v1.
        var aDown = false;
        var cutOff = Clock.GetUtcNow() - TimeSpan.FromMinutes(2);
        Handler.Respond = (r, ct) =>
        {
            if (r.Uri.Host == Scripted.ServerA.Host)
            {
                return aDown
                    ? throw new HttpRequestException("Connection refused")
                    : r.Uri.Query.Contains("version", StringComparison.Ordinal)
                        ? Scripted.HeldAsync(ct)
                        : Task.FromResult(Scripted.Answer("v2", ("provider_test", "http", "10.0.0.2:80")));
            }

            var stale = Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80"));
            stale.Headers.Add("X-Registry-Stale", "true");
            stale.Headers.Age = Clock.GetUtcNow() - cutOff;
            return Task.FromResult(stale);
        };
        var directory = Directory.CreateTempSubdirectory("registry-client-cache-").FullName;
        var before = await NewClient(o => o.CacheDirectory = directory, Scripted.ServerA, Scripted.ServerB).SubscribeAsync(new SubscriptionEntry("provider_test"));
        await before.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
        await Handler.NextAsync(r => r.Uri.Host == Scripted.ServerA.Host && r.Uri.Query.Contains("version=v2", StringComparison.Ordinal));
        await before.DisposeAsync();

        // The consumer restarts a minute later, after A died: it starts from the file, and B's older answer is left.
        aDown = true;
        Clock.Advance(TimeSpan.FromMinutes(1));
        await using var after = await NewClient(o => o.CacheDirectory = directory, Scripted.ServerA, Scripted.ServerB).SubscribeAsync(new SubscriptionEntry("provider_test"));
        await Handler.NextAsync(r => r.Uri.Host == Scripted.ServerB.Host);
        await Clock.NextTimerAsync(d => d > TimeSpan.Zero && d <= TimeSpan.FromSeconds(1) && !Scripted.IsRequestTimeout(d));
        Assert.Equal("10.0.0.2:80", Assert.Single(after.Current!.Endpoints).Addr);
        Assert.Equal(RegistryConnectionState.Unavailable, after.State);
        Assert.Contains("cut off from its database", after.LastError!.Message, StringComparison.Ordinal);
        await after.DisposeAsync();
        Directory.Delete(directory, recursive: true);
    }

    [Fact]
    public async Task WithEveryNodeDownTheSubscriptionKeepsItsAnswerAndBacksOffToTheCap()
    {
        var down = false;
        Handler.Respond = (r, ct) => down
            ? throw new HttpRequestException("Connection refused")
            : r.Uri.Query.Contains("version", StringComparison.Ordinal)
                ? Scripted.HeldAsync(ct)
                : Task.FromResult(Scripted.Answer("v1", ("provider_test", "http", "10.0.0.1:80")));
        await using var subscription = await NewClient(null, Scripted.ServerA, Scripted.ServerB).SubscribeAsync(new SubscriptionEntry("provider_test"));
        var before = await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
        await Handler.NextAsync(r => r.Uri.Query.Contains("version", StringComparison.Ordinal));

        // The held poll's own timeout runs out while both nodes are down.
        down = true;
        Clock.Advance(TimeSpan.FromSeconds(41.875));
        var delays = new List<TimeSpan>();
        for (var i = 0; i < 8; i++)
        {
            delays.Add(await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(30)));
        }

        Assert.Same(before, subscription.Current);
        Assert.Equal(RegistryConnectionState.Unavailable, subscription.State);
        Assert.IsType<RegistryUnavailableException>(subscription.LastError);
        // 1, 2, 4, 8, 16 s then the 30 s cap, each from the upper half of its step: one round over both nodes per delay.
        Assert.All(delays.Skip(5), d => Assert.InRange(d, TimeSpan.FromSeconds(15), TimeSpan.FromSeconds(30)));
        Assert.Single(Logs.Entries, e => e.Level >= LogLevel.Warning);
    }

    private static async Task<HttpResponseMessage> FailOddlyOnCancellationAsync(CancellationToken cancellationToken)
    {
        try
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }

        throw new InvalidOperationException("a handler that fails oddly on cancellation");
    }
}
