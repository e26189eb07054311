using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Http.Resilience;
using Microsoft.Extensions.Logging;
using Polly.Timeout;
using Registry.Client.UnitTests.Infrastructure;

namespace Registry.Client.UnitTests;

/// <summary>The client inside an app configured the way most .NET services now are (Aspire's ServiceDefaults).</summary>
public sealed class HostingTests : IDisposable
{
    private readonly TestClock _clock = new();
    private readonly ScriptedHandler _handler;
    private readonly CapturedLogs _logs = new();

    public HostingTests() => _handler = new ScriptedHandler(_clock);

    private ServiceProvider BuildApp(Action<RegistryClientOptions>? configure = null)
    {
        var services = new ServiceCollection();
        services.AddSingleton<TimeProvider>(_clock);
        services.AddLogging(logging => logging.AddProvider(_logs).SetMinimumLevel(LogLevel.Trace));
        services.AddRegistryClient(o =>
        {
            o.Servers.Add(Scripted.ServerA);
            o.Servers.Add(Scripted.ServerB);
            configure?.Invoke(o);
        });
        // As ServiceDefaults does, and after AddRegistryClient: the defaults still run first, whatever the order.
        services.ConfigureHttpClientDefaults(http => http.AddStandardResilienceHandler());
        foreach (var name in new[] { RegistryClientServiceCollectionExtensions.HttpClientName, "other" })
        {
            services.AddHttpClient(name).ConfigurePrimaryHttpMessageHandler(() => _handler).SetHandlerLifetime(Timeout.InfiniteTimeSpan);
        }

        return services.BuildServiceProvider();
    }

    [Fact]
    public async Task WithTheStandardResilienceHandlerOnEveryClientASubscriptionStillSeesAChangeAfterALongPoll()
    {
        var change = new TaskCompletionSource<HttpResponseMessage>();
        _handler.Respond = (r, ct) => r.Path switch
        {
            "/v1/subscribe" when r.Uri.Query.Contains("version=v1", StringComparison.Ordinal) => change.Task.WaitAsync(ct),
            "/v1/subscribe" when r.Uri.Query.Length == 0 => Task.FromResult(Scripted.Answer("v1")),
            _ => Scripted.HeldAsync(ct),
        };
        var app = BuildApp();
        var subscription = await app.GetRequiredService<RegistryClient>().SubscribeAsync(new SubscriptionEntry("resil_app", "http"));
        await subscription.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
        await _handler.NextAsync(r => r.Uri.Query.Contains("version=v1", StringComparison.Ordinal));
        // The same poll through another client of the app: the standard handler's timeouts (10 s an attempt, 30 s in all) cut it.
        var other = app.GetRequiredService<IHttpClientFactory>().CreateClient("other")
            .PostAsync(new Uri(Scripted.ServerA, "v1/other"), new StringContent("{}"));
        await _handler.NextAsync(r => r.Path == "/v1/other");

        // A provider registers 40 s into the poll.
        _clock.Advance(TimeSpan.FromSeconds(40));
        change.SetResult(Scripted.Answer("v2", ("resil_app", "http", "10.0.0.9:80")));

        await Assert.ThrowsAsync<TimeoutRejectedException>(() => other.WaitAsync(Scripted.Patience));
        using (var seen = new CancellationTokenSource(Scripted.Patience))
        {
            await foreach (var answer in subscription.WatchAsync(seen.Token))
            {
                if (answer.Version == "v2")
                {
                    break;
                }
            }
        }

        Assert.Equal(RegistryConnectionState.Connected, subscription.State);
        // No retry by a resilience handler: the first poll and the long one, then the one holding v2.
        Assert.Equal(2, _handler.Sent.Count(r => r.Path == "/v1/subscribe" && !r.Uri.Query.Contains("version=v2", StringComparison.Ordinal)));
        // Shutdown: the container disposes the client's pool; the subscription is the app's to dispose. Neither throws.
        await subscription.DisposeAsync();
        await app.DisposeAsync();
    }

    [Fact]
    public void TheRegistryClientsOwnHandlerChainHasNoAppWideHandlersAndAConnectTimeout()
    {
        using var app = BuildApp(o => o.ConnectTimeout = TimeSpan.FromSeconds(2));
        var handlers = app.GetRequiredService<IHttpMessageHandlerFactory>();

        var registry = Chain(handlers.CreateHandler(RegistryClientServiceCollectionExtensions.HttpClientName));
        var other = Chain(handlers.CreateHandler("other"));

        Assert.Contains(other, h => h is ResilienceHandler);
        Assert.DoesNotContain(registry, h => h is ResilienceHandler);
        Assert.DoesNotContain(registry, h => h.GetType().Name.Contains("Logging", StringComparison.Ordinal));
        Assert.Same(_handler, registry[^1]);

        // Without the test's scripted primary handler, the client's own primary handler carries the connect timeout.
        var services = new ServiceCollection();
        services.AddRegistryClient(o =>
        {
            o.Servers.Add(Scripted.ServerA);
            o.ConnectTimeout = TimeSpan.FromSeconds(2);
        });
        using var plain = services.BuildServiceProvider();
        var primary = Chain(plain.GetRequiredService<IHttpMessageHandlerFactory>().CreateHandler(RegistryClientServiceCollectionExtensions.HttpClientName))[^1];
        Assert.Equal(TimeSpan.FromSeconds(2), Assert.IsType<SocketsHttpHandler>(primary).ConnectTimeout);
    }

    [Fact]
    public async Task AnOutageLogsTheClientsOneWarningAndNothingFromTheHttpClientsOwnHandlers()
    {
        _handler.Respond = (_, _) => throw new HttpRequestException("Connection refused (registry-a:5080)");
        await using var app = BuildApp();
        await using var subscription = await app.GetRequiredService<RegistryClient>().SubscribeAsync(new SubscriptionEntry("provider_test"));

        for (var i = 0; i < 10; i++)
        {
            await _clock.PassNextDelayAsync(TimeSpan.FromSeconds(30));
        }

        Assert.True(_handler.Sent.Count >= 20, $"{_handler.Sent.Count} requests");
        Assert.DoesNotContain(_logs.Entries, e => e.Category.StartsWith("System.Net.Http.HttpClient", StringComparison.Ordinal));
        var warning = Assert.Single(_logs.Entries, e => e.Level >= LogLevel.Warning);
        Assert.Contains("unreachable", warning.Message, StringComparison.Ordinal);
        Assert.Null(warning.Exception);

        // A request through another client of the app is logged by the factory's handlers: what the registry client turned off.
        using var stop = new CancellationTokenSource();
        var other = app.GetRequiredService<IHttpClientFactory>().CreateClient("other").GetAsync(new Uri(Scripted.ServerA, "x"), stop.Token);
        await _handler.NextAsync(r => r.Path == "/x");
        Assert.Contains(_logs.Entries, e => e.Category.StartsWith("System.Net.Http.HttpClient.other", StringComparison.Ordinal));
        await stop.CancelAsync();
        await Assert.ThrowsAnyAsync<Exception>(() => other);
    }

    [Fact]
    public void TheClientIsRegisteredUnderItsInterfaceToo()
    {
        using var app = BuildApp();

        Assert.Same(app.GetRequiredService<RegistryClient>(), app.GetRequiredService<IRegistryClient>());
    }

    private static List<HttpMessageHandler> Chain(HttpMessageHandler handler)
    {
        var chain = new List<HttpMessageHandler> { handler };
        while (chain[^1] is DelegatingHandler { InnerHandler: { } inner })
        {
            chain.Add(inner);
        }

        return chain;
    }

    public void Dispose()
    {
        _handler.Dispose();
        _logs.Dispose();
    }
}
