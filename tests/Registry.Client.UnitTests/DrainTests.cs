using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Registry.Client.UnitTests.Infrastructure;

namespace Registry.Client.UnitTests;

/// <summary>Draining a registration: the lease's DrainAsync and the hosted registration's shutdown.</summary>
public sealed class DrainTests : ScriptedTest
{
    private const string Drained = """{"delivered":7,"pending":1,"nodes":2,"complete":false}""";

    [Fact]
    public async Task DrainAsyncRemovesTheInstanceWithTheTimeoutInWholeSecondsAndReturnsWhatTheRegistryCounted()
    {
        Handler.Respond = (r, _) => Task.FromResult(r.Path == "/v1/unregister"
            ? Scripted.Json(HttpStatusCode.OK, Drained)
            : Scripted.Lease(30, Clock.GetUtcNow()));
        var lease = await NewClient().RegisterAsync(Instance());

        var result = await lease.DrainAsync(TimeSpan.FromSeconds(2.5));
        await lease.DisposeAsync();

        var sent = Assert.Single(Handler.Sent, r => r.Path == "/v1/unregister");
        Assert.Equal("?drain=3", sent.Uri.Query);
        Assert.Contains("\"addr\":\"10.0.0.1:80\"", sent.Body, StringComparison.Ordinal);
        Assert.Equal((7, 1, 2, false, true), (result.Delivered, result.Pending, result.Nodes, result.Complete, result.Removed));
        Assert.Equal(RegistryConnectionState.Stopped, lease.State);
        Assert.False(lease.IsRegistered);
        Assert.Contains(Logs.Entries, e => e.Message.StartsWith("Drained provider_test", StringComparison.Ordinal));
    }

    [Fact]
    public async Task DrainingAnInstanceTheRegistryForgotIsNotRegisteredAndComplete()
    {
        Handler.Respond = (r, _) => Task.FromResult(r.Path == "/v1/unregister"
            ? Scripted.Problem(HttpStatusCode.NotFound, "Instance not registered")
            : Scripted.Lease(30, Clock.GetUtcNow()));
        await using var lease = await NewClient().RegisterAsync(Instance());

        var result = await lease.DrainAsync(TimeSpan.FromSeconds(90));

        Assert.Same(DrainResult.NotRegistered, result);
        Assert.True(result.Complete);
        Assert.False(result.Removed);
        Assert.Equal("?drain=60", Assert.Single(Handler.Sent, r => r.Path == "/v1/unregister").Uri.Query);
    }

    [Fact]
    public async Task AFailedDrainUnregistersPlainlyAndThrows()
    {
        Handler.Respond = (r, _) => r.Path switch
        {
            "/v1/unregister" when r.Uri.Query.Length > 0 => Task.FromResult(Scripted.Problem(HttpStatusCode.BadRequest, "The request is invalid")),
            "/v1/unregister" => Task.FromResult(new HttpResponseMessage(HttpStatusCode.NoContent)),
            _ => Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow())),
        };
        var lease = await NewClient().RegisterAsync(Instance());

        await Assert.ThrowsAsync<RegistryClientException>(() => lease.DrainAsync(TimeSpan.FromSeconds(5)));

        Assert.Equal(["?drain=5", ""], Handler.Sent.Where(r => r.Path == "/v1/unregister").Select(r => r.Uri.Query));
        Assert.Contains(Logs.Entries, e => e.Level == LogLevel.Warning && e.Message.StartsWith("Could not drain", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ADrainANodeMayHaveTakenIsNotSentToTheNextNodeButFailsAndUnregistersPlainly()
    {
        // A's proxy gives up on the drain (A may have removed the instance); B, sharing the database, no longer knows it.
        Handler.Respond = (r, _) => Task.FromResult(r.Path switch
        {
            "/v1/unregister" when r.Uri.Query.Length > 0 && r.Uri.Host == Scripted.ServerA.Host => new HttpResponseMessage(HttpStatusCode.GatewayTimeout),
            "/v1/unregister" => Scripted.Problem(HttpStatusCode.NotFound, "Instance not registered"),
            _ => Scripted.Lease(30, Clock.GetUtcNow()),
        });
        var lease = await NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance());

        // Not "nobody watched it" from B: whether consumers heard is not known.
        await Assert.ThrowsAsync<RegistryUnavailableException>(() => lease.DrainAsync(TimeSpan.FromSeconds(5)));

        Assert.Equal(["registry-a ?drain=5", "registry-a "], Handler.Sent.Where(r => r.Path == "/v1/unregister").Select(r => $"{r.Uri.Host} {r.Uri.Query}"));
        Assert.False(lease.IsRegistered);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ADrainGoesOnToTheNextNodeOnlyWhenTheLastCouldNotBeConnectedTo(bool connectTimeout)
    {
        // What the runtime really throws: SocketsHttpHandler's ConnectTimeout cancels from inside before anything is sent;
        // an HttpClient.Timeout (an app's client) is the same exception type around a request that may have been taken.
        var thrown = await ThrownByAsync(connectTimeout
            ? new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromMilliseconds(50), ConnectCallback = NeverConnectAsync }) { Timeout = Timeout.InfiniteTimeSpan }
            : new HttpClient(new SocketsHttpHandler { ConnectCallback = NeverConnectAsync }) { Timeout = TimeSpan.FromMilliseconds(50) });
        Handler.Respond = (r, _) => r.Path == "/v1/unregister" && r.Uri.Query.Length > 0 && r.Uri.Host == Scripted.ServerA.Host
            ? throw thrown
            : Task.FromResult(r.Path == "/v1/unregister" ? Scripted.Json(HttpStatusCode.OK, Drained) : Scripted.Lease(30, Clock.GetUtcNow()));
        var lease = await NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance());

        if (connectTimeout)
        {
            var result = await lease.DrainAsync(TimeSpan.FromSeconds(5));
            Assert.Equal((7, true), (result.Delivered, result.Removed));
            Assert.Equal(["registry-a ?drain=5", "registry-b ?drain=5"], Handler.Sent.Where(r => r.Path == "/v1/unregister").Select(r => $"{r.Uri.Host} {r.Uri.Query}"));
        }
        else
        {
            await Assert.ThrowsAsync<RegistryUnavailableException>(() => lease.DrainAsync(TimeSpan.FromSeconds(5)));
            Assert.Equal(["registry-a ?drain=5", "registry-a "], Handler.Sent.Where(r => r.Path == "/v1/unregister").Select(r => $"{r.Uri.Host} {r.Uri.Query}"));
        }

        static async ValueTask<Stream> NeverConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
            throw new InvalidOperationException("unreachable");
        }

        static async Task<Exception> ThrownByAsync(HttpClient client)
        {
            using (client)
            {
                return await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.GetAsync(new Uri("http://registry-a:5080/")));
            }
        }
    }

    /// <summary>
    /// A node whose name does not resolve (a StatefulSet pod restarting) or whose TLS handshake fails was sent nothing.
    /// Before, only a refused connection counted so: the drain stopped at the first node, failed, and only a plain
    /// unregister was sent.
    /// </summary>
    [Theory]
    [InlineData(HttpRequestError.NameResolutionError)]
    [InlineData(HttpRequestError.SecureConnectionError)]
    public async Task ADrainGoesOnToTheNextNodeWhenTheLastWasSentNothing(HttpRequestError error)
    {
        Handler.Respond = (r, _) => r.Path == "/v1/unregister" && r.Uri.Host == Scripted.ServerA.Host
            ? throw new HttpRequestException(error, $"registry-a: {error}")
            : Task.FromResult(r.Path == "/v1/unregister" ? Scripted.Json(HttpStatusCode.OK, Drained) : Scripted.Lease(30, Clock.GetUtcNow()));
        var lease = await NewClient(null, Scripted.ServerA, Scripted.ServerB).RegisterAsync(Instance());

        var result = await lease.DrainAsync(TimeSpan.FromSeconds(5));

        Assert.Equal((7, true), (result.Delivered, result.Removed));
        Assert.Equal(["registry-a ?drain=5", "registry-b ?drain=5"], Handler.Sent.Where(r => r.Path == "/v1/unregister").Select(r => $"{r.Uri.Host} {r.Uri.Query}"));
    }

    [Fact]
    public async Task ADrainCutByTheHostsShutdownTokenStillUnregistersPlainly()
    {
        // The host's shutdown timeout ran out while consumers were being waited for: they may not all have heard,
        // but the instance must not stay registered until its lease runs out.
        var drainSent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Handler.Respond = (r, ct) => r.Path switch
        {
            "/v1/unregister" when r.Uri.Query.Length > 0 => HeldDrainAsync(ct),
            "/v1/unregister" => Task.FromResult(new HttpResponseMessage(HttpStatusCode.NoContent)),
            _ => Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow())),
        };
        var lease = await NewClient().RegisterAsync(Instance());
        using var shutdown = new CancellationTokenSource();

        var drain = lease.DrainAsync(TimeSpan.FromSeconds(10), shutdown.Token);
        await drainSent.Task.WaitAsync(Scripted.Patience);
        await shutdown.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => drain.WaitAsync(Scripted.Patience));
        Assert.Equal(["?drain=10", ""], Handler.Sent.Where(r => r.Path == "/v1/unregister").Select(r => r.Uri.Query));
        Assert.False(lease.IsRegistered);

        async Task<HttpResponseMessage> HeldDrainAsync(CancellationToken cancellationToken)
        {
            drainSent.TrySetResult();
            return await Scripted.HeldAsync(cancellationToken);
        }
    }

    [Fact]
    public async Task ADrainTimeoutIsPositive()
    {
        Handler.Respond = (_, _) => Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow()));
        await using var lease = await NewClient().RegisterAsync(Instance());

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => lease.DrainAsync(TimeSpan.Zero));
    }

    [Theory]
    [InlineData(10, "?drain=10")]
    [InlineData(0, "")]
    public async Task TheHostedRegistrationDrainsWhenTheHostBeginsToStopUnlessTheDrainTimeoutIsZero(int drainSeconds, string query)
    {
        var drainSent = new TaskCompletionSource();
        var drainAnswer = new TaskCompletionSource<HttpResponseMessage>();
        Handler.Respond = (r, _) =>
        {
            if (r.Path != "/v1/unregister")
            {
                return Task.FromResult(Scripted.Lease(30, Clock.GetUtcNow()));
            }

            drainSent.TrySetResult();
            return r.Uri.Query.Length > 0 ? drainAnswer.Task : Task.FromResult(new HttpResponseMessage(HttpStatusCode.NoContent));
        };
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(Clock);
        services.AddLogging();
        services.AddRegistryClient(o =>
        {
            o.Servers.Add(Scripted.ServerA);
            o.DrainTimeout = TimeSpan.FromSeconds(drainSeconds);
        });
        services.AddHttpClient(RegistryClientServiceCollectionExtensions.HttpClientName).ConfigurePrimaryHttpMessageHandler(() => Handler);
        services.AddRegistryRegistration(Instance());
        await using var app = services.BuildServiceProvider();
        var hosted = (IHostedLifecycleService)Assert.Single(app.GetServices<IHostedService>());
        await hosted.StartedAsync(CancellationToken.None);

        var stopping = hosted.StoppingAsync(CancellationToken.None);
        await drainSent.Task.WaitAsync(Scripted.Patience);
        if (drainSeconds > 0)
        {
            // The host does not go on stopping (and stop serving) while the drain waits.
            Assert.False(stopping.IsCompleted);
            drainAnswer.SetResult(Scripted.Json(HttpStatusCode.OK, """{"delivered":3,"pending":0,"nodes":2,"complete":true}"""));
        }

        await stopping.WaitAsync(Scripted.Patience);

        Assert.Equal(query, Assert.Single(Handler.Sent, r => r.Path == "/v1/unregister").Uri.Query);
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(61)]
    public void ADrainTimeoutOutsideOneToSixtySecondsIsRefused(double seconds)
    {
        var options = Scripted.Options(Scripted.ServerA);
        options.DrainTimeout = TimeSpan.FromSeconds(seconds);

        var result = new RegistryClientOptionsValidator().Validate(null, options);

        Assert.True(result.Failed);
        Assert.Contains(result.Failures!, f => f.StartsWith("DrainTimeout:", StringComparison.Ordinal));
    }
}
