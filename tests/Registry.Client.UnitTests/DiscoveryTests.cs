using System.Net;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Microsoft.Extensions.ServiceDiscovery;
using Registry.Client.ServiceDiscovery;
using Registry.Client.UnitTests.Infrastructure;

namespace Registry.Client.UnitTests;

public sealed class DiscoveryTests : ScriptedTest
{
    private readonly Dictionary<string, (string Protocol, string Addr)[]> _registered = new(StringComparer.Ordinal);
    private readonly List<string> _forbidden = [];
    private bool _forbiddenNamed = true;

    public DiscoveryTests()
    {
        // A registry that knows _registered: lists it, and answers subscriptions from it (holding polls that are current).
        Handler.Respond = (r, ct) =>
        {
            if (r.Path == "/v1/services")
            {
                var items = string.Join(",", _registered.Select(p => $$"""{"application":"{{p.Key}}","instances":{{p.Value.Length}}}"""));
                return Task.FromResult(Scripted.Json(HttpStatusCode.OK, $$"""{"services":[{{items}}]}"""));
            }

            var providers = System.Text.Json.JsonDocument.Parse(r.Body).RootElement.GetProperty("subscribes").EnumerateArray()
                .Select(e => e.GetProperty("provider").GetString()!).ToList();
            if (providers.FirstOrDefault(_forbidden.Contains) is { } forbidden)
            {
                return Task.FromResult(Scripted.Problem(HttpStatusCode.Forbidden, "Forbidden", _forbiddenNamed ? $$""","application":"{{forbidden}}","scope":"subscribe" """ : ""));
            }

            var endpoints = providers.Order(StringComparer.Ordinal)
                .SelectMany(p => _registered.TryGetValue(p, out var instances) ? instances.Select(i => (p, i.Protocol, i.Addr)) : [])
                .ToArray();
            var version = "v" + string.Join("|", endpoints).GetHashCode(StringComparison.Ordinal).ToString("x", System.Globalization.CultureInfo.InvariantCulture);
            return r.Uri.Query.Contains($"version={version}", StringComparison.Ordinal)
                ? Scripted.HeldAsync(ct)
                : Task.FromResult(Scripted.Answer(version, endpoints));
        };
    }

    private (RegistryServiceEndpointProviderFactory Factory, RegistryClient Client) NewFactory(Action<RegistryClientOptions>? configure = null, ServiceDiscoveryOptions? discovery = null)
    {
        var client = NewClient(configure);
        return (new RegistryServiceEndpointProviderFactory(client, Options.Create(discovery ?? new ServiceDiscoveryOptions()), Clock), client);
    }

    private static async Task<List<ServiceEndpoint>> ResolveAsync(RegistryServiceEndpointProviderFactory factory, string uri)
    {
        Assert.True(ServiceEndpointQuery.TryParse(uri, out var query));
        Assert.True(factory.TryCreateProvider(query, out var provider));
        await using (provider)
        {
            var builder = new Builder();
            await provider.PopulateAsync(builder, CancellationToken.None).AsTask().WaitAsync(Scripted.Patience);
            return [.. builder.Endpoints];
        }
    }

    [Fact]
    public async Task HttpsPlusHttpKeepsOnlyTheMostPreferredSchemeThatIsPresent()
    {
        _registered["web"] = [("http", "10.0.0.1:80"), ("http", "10.0.0.2:80")];
        _registered["secure"] = [("http", "10.0.0.3:80"), ("https", "10.0.0.3:443")];
        var (factory, _) = NewFactory();

        var web = await ResolveAsync(factory, "https+http://web");
        var secure = await ResolveAsync(factory, "https+http://secure");

        // Carrying the scheme, so the HTTP handler calls http:// rather than the query's first scheme.
        Assert.Equal(["http://10.0.0.1/", "http://10.0.0.2/"], web.Select(e => ((UriEndPoint)e.EndPoint).Uri.ToString()));
        Assert.Equal(["https://10.0.0.3/"], secure.Select(e => ((UriEndPoint)e.EndPoint).Uri.ToString()));
    }

    [Fact]
    public async Task SchemesOutsideAllowedSchemesAreDroppedAndAnEndpointNameSelectsItsProtocol()
    {
        _registered["mixed"] = [("http", "10.0.0.1:80"), ("https", "10.0.0.1:443"), ("grpc", "10.0.0.1:5000")];
        var (factory, _) = NewFactory(discovery: new ServiceDiscoveryOptions { AllowAllSchemes = false, AllowedSchemes = ["http"] });

        var allowed = await ResolveAsync(factory, "https+http://mixed");
        var grpc = await ResolveAsync(factory, "http://_grpc.mixed");

        Assert.Equal(["http://10.0.0.1/"], allowed.Select(e => ((UriEndPoint)e.EndPoint).Uri.ToString()));
        Assert.Equal(["10.0.0.1:5000"], grpc.Select(e => e.EndPoint.ToString()));
    }

    /// <summary>
    /// Application names are case-sensitive (Eureka spells them in capitals), but a URI's host comes lowercased: before,
    /// http://PAYMENT-SERVICE was taken for an application the registry does not list, and resolved to nothing (and,
    /// with the name among DiscoveryApplications, subscribed to the lowercased name: an empty answer for ever).
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    // Listed exactly in DiscoveryApplications, the name is watched as listed even when the registry cannot list its applications.
    [InlineData(true, true)]
    public async Task ANameInCapitalsIsResolvedAsTheRegistrySpellsIt(bool listedInOptions, bool directoryDown)
    {
        _registered["PAYMENT-SERVICE"] = [("http", "10.0.0.1:80")];
        var registry = Handler.Respond;
        Handler.Respond = (r, ct) => directoryDown && r.Path == "/v1/services" ? Task.FromResult(Scripted.Unavailable(null)) : registry(r, ct);
        var (factory, _) = NewFactory(o =>
        {
            if (listedInOptions)
            {
                o.DiscoveryApplications.Add("PAYMENT-SERVICE");
            }
        });

        var endpoint = Assert.Single(await ResolveAsync(factory, "http://PAYMENT-SERVICE"));

        Assert.Equal("10.0.0.1:80", endpoint.EndPoint.ToString());
    }

    [Fact]
    public async Task TheHostNameFeatureCarriesTheServiceNameWhenAskedFor()
    {
        _registered["web"] = [("http", "10.0.0.1:80")];
        var (factory, _) = NewFactory(o => o.ApplyHostNameMetadata = true);

        var endpoint = Assert.Single(await ResolveAsync(factory, "http://web"));

        Assert.Equal("web", endpoint.Features.Get<IHostNameFeature>()?.HostName);
    }

    [Theory]
    [InlineData("http://localhost")]
    [InlineData("http://127.0.0.1")]
    [InlineData("http://registry-a")]
    public void NamesThatCannotBeApplicationsAreLeftToOtherProviders(string uri)
    {
        var (factory, _) = NewFactory();
        Assert.True(ServiceEndpointQuery.TryParse(uri, out var query));

        Assert.False(factory.TryCreateProvider(query, out _));
    }

    [Fact]
    public async Task ANameTheRegistryDoesNotListResolvesToNothingAtOnceWithoutASubscription()
    {
        _registered["web"] = [("http", "10.0.0.1:80")];
        var (factory, _) = NewFactory();

        var endpoints = await ResolveAsync(factory, "http://api.github.com");

        Assert.Empty(endpoints);
        Assert.Equal(0, Handler.Count("/v1/subscribe"));
    }

    [Fact]
    public void WithAnAllowListOnlyItsNamesAreClaimed()
    {
        var (factory, _) = NewFactory(o =>
        {
            o.DiscoveryApplications.Add("payments.*");
            o.DiscoveryApplications.Add("web");
        });

        Assert.True(Claims(factory, "http://payments.api"));
        Assert.True(Claims(factory, "http://web"));
        Assert.False(Claims(factory, "http://webshop"));

        static bool Claims(RegistryServiceEndpointProviderFactory factory, string uri) =>
            ServiceEndpointQuery.TryParse(uri, out var query) && factory.TryCreateProvider(query, out _);
    }

    [Fact]
    public async Task ARefusedSubscriptionIsRecreatedOnTheNextResolution()
    {
        _registered["web"] = [("http", "10.0.0.1:80")];
        _forbidden.Add("web");
        var (factory, _) = NewFactory();

        Assert.True(ServiceEndpointQuery.TryParse("http://web", out var query));
        Assert.True(factory.TryCreateProvider(query, out var provider));
        await using (provider)
        {
            var refused = new Builder();
            await provider.PopulateAsync(refused, CancellationToken.None).AsTask().WaitAsync(Scripted.Patience);
            Assert.Empty(refused.Endpoints);
            // Asked again after a poll's wait, not at once: a token already fired would have every request for the
            // name resolve, and subscribe, again.
            Assert.DoesNotContain(refused.Tokens, t => t.HasChanged);
        }

        _forbidden.Clear();
        var endpoints = await ResolveAsync(factory, "http://web");

        Assert.Equal(["10.0.0.1:80"], endpoints.Select(e => e.EndPoint.ToString()));
        Assert.Equal(2, Handler.Sent.Count(r => r.Path == "/v1/subscribe" && r.Uri.Query.Length == 0));
    }

    [Fact]
    public async Task AWatchRefusedAfterItsFirstAnswerFiresItsChangeTokenSoTheResolverResolvesAfresh()
    {
        _registered["web"] = [("http", "10.0.0.1:80")];
        var (factory, _) = NewFactory();
        Assert.True(ServiceEndpointQuery.TryParse("http://web", out var query));
        Assert.True(factory.TryCreateProvider(query, out var provider));
        await using (provider)
        {
            // The first resolution's token fires with the first answer; the resolver resolves again, as MESD does.
            await provider.PopulateAsync(new Builder(), CancellationToken.None).AsTask().WaitAsync(Scripted.Patience);
            var builder = new Builder();
            await provider.PopulateAsync(builder, CancellationToken.None).AsTask().WaitAsync(Scripted.Patience);
            Assert.Equal(["10.0.0.1:80"], builder.Endpoints.Select(e => e.EndPoint.ToString()));
            var changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var registration = Assert.Single(builder.Tokens).RegisterChangeCallback(_ => changed.TrySetResult(), null);
            await Handler.NextAsync(r => r.Path == "/v1/subscribe" && r.Uri.Query.Length > 0);

            // The held poll times out; the next one is refused (a credential that lost the scope).
            _forbidden.Add("web");
            Clock.Advance(TimeSpan.FromSeconds(41.875));
            await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1)); // the first step of the backoff (the resolutions' 10 s timeouts are longer)

            // Told, the resolver leaves the failed watch; else it would serve these endpoints for ever.
            await changed.Task.WaitAsync(Scripted.Patience);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ManyServicesShareFewPollsAndOneForbiddenNameDoesNotTakeItsNeighboursDown(bool problemNamesTheApplication)
    {
        for (var i = 0; i < 70; i++)
        {
            _registered[$"app{i:D2}"] = [("http", $"10.0.1.{i}:80")];
        }

        _forbidden.Add("app03");
        _forbiddenNamed = problemNamesTheApplication;
        var (_, client) = NewFactory();
        var pool = client.Discovery;
        var watches = Enumerable.Range(0, 70).Select(i => pool.Acquire($"app{i:D2}")).ToList();

        await Task.WhenAll(watches.Select(w => w.FirstAnswer)).WaitAsync(Scripted.Patience);

        Assert.All(watches.Where(w => w.Application != "app03"), w => Assert.Equal($"10.0.1.{w.Application[3..].TrimStart('0').PadLeft(1, '0')}:80", Assert.Single(w.Endpoints!).Addr));
        Assert.IsType<RegistryAccessDeniedException>(watches.Single(w => w.Application == "app03").Failure);
        var bodies = Handler.Sent.Where(r => r.Path == "/v1/subscribe").Select(r => System.Text.Json.JsonDocument.Parse(r.Body).RootElement.GetProperty("subscribes").GetArrayLength()).ToList();
        Assert.All(bodies, n => Assert.InRange(n, 1, DiscoveryPool.MaxEntries));
        if (problemNamesTheApplication)
        {
            // Only app03 is let go; the other 69 stay in groups of up to 64: two polls.
            Assert.Equal(2, pool.GroupCount);
        }
    }

    /// <summary>
    /// A shared subscription refused 401 (the credential, revoked for good): before, the pool split it into one
    /// subscription per application, as for a 403 naming none, each refused alike, and the groups never merged again.
    /// </summary>
    [Fact]
    public async Task ASubscriptionRefused401IsNotSplitIntoOnePerApplication()
    {
        _registered["a"] = [("http", "10.0.0.1:80")];
        _registered["b"] = [("http", "10.0.0.2:80")];
        var registry = Handler.Respond;
        var revoked = false;
        Handler.Respond = (r, ct) => revoked && r.Path == "/v1/subscribe"
            ? Task.FromResult(Scripted.Problem(HttpStatusCode.Unauthorized, "Unauthorized", ""","detail":"The token has been revoked." """))
            : registry(r, ct);
        var (_, client) = NewFactory();
        var a = client.Discovery.Acquire("a");
        var b = client.Discovery.Acquire("b");
        await Task.WhenAll(a.FirstAnswer, b.FirstAnswer).WaitAsync(Scripted.Patience);
        await Handler.NextAsync(r => r.Uri.Query.Length > 0 && r.Body.Contains("\"a\"", StringComparison.Ordinal) && r.Body.Contains("\"b\"", StringComparison.Ordinal));

        var changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        a.GetChangeToken().RegisterChangeCallback(_ => changed.TrySetResult(), null);
        revoked = true;
        var sentBefore = Handler.Sent.Count;
        Clock.Advance(TimeSpan.FromSeconds(41.875)); // the held poll's timeout; then asked again, and refused three times
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));
        await Handler.NextAsync(r => r.Uri.Query.Length > 0);
        await Handler.NextAsync(r => r.Uri.Query.Length > 0);
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1.5));
        await Handler.NextAsync(r => r.Uri.Query.Length > 0);
        await changed.Task.WaitAsync(Scripted.Patience);
        Assert.IsType<RegistryAccessDeniedException>(a.Failure);

        Assert.DoesNotContain(Handler.Sent.Skip(sentBefore), r => r.Path == "/v1/subscribe"
            && System.Text.Json.JsonDocument.Parse(r.Body).RootElement.GetProperty("subscribes").GetArrayLength() == 1);
        Assert.Equal(0, client.Discovery.GroupCount);
    }

    [Fact]
    public async Task AChangeCallbackThatWaitsForAnotherResolutionDoesNotStopThePool()
    {
        _registered["a"] = [("http", "10.0.0.1:80")];
        _registered["b"] = [("http", "10.0.0.2:80")];
        var (_, client) = NewFactory();
        var a = client.Discovery.Acquire("a");
        await a.FirstAnswer.WaitAsync(Scripted.Patience);
        await Handler.NextAsync(r => r.Uri.Query.Length > 0);
        // An app's callback that resolves another name on another thread and waits for it (sync over async).
        var resolvedInTime = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        a.GetChangeToken().RegisterChangeCallback(_ => resolvedInTime.TrySetResult(Task.Run(() => client.Discovery.Acquire("b")).Wait(Scripted.Patience)), null);

        _registered["a"] = [("http", "10.0.0.3:80")];
        Clock.Advance(TimeSpan.FromSeconds(41.875)); // the held poll's timeout
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));

        Assert.True(await resolvedInTime.Task.WaitAsync(2 * Scripted.Patience));
    }

    [Fact]
    public async Task DisposingTheClientWaitsForTheSubscriptionAReplacementIsStillDisposing()
    {
        _registered["a"] = [("http", "10.0.0.1:80")];
        _registered["b"] = [("http", "10.0.0.2:80")];
        var registry = Handler.Respond;
        var pollLetGo = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var pollEnds = new TaskCompletionSource<HttpResponseMessage>(TaskCreationOptions.RunContinuationsAsynchronously);
        // a's held poll ends only when the test says, cancelled or not (a network slow to give up).
        Handler.Respond = (r, ct) => r.Uri.Query.Length > 0 && !r.Body.Contains("\"b\"", StringComparison.Ordinal) ? HeldPastCancellation(ct) : registry(r, ct);
        var (_, client) = NewFactory();
        var a = client.Discovery.Acquire("a");
        await a.FirstAnswer.WaitAsync(Scripted.Patience);
        await Handler.NextAsync(r => r.Uri.Query.Length > 0);

        // Joining b replaces the group's subscription: a's alone is disposed, and waits for its poll.
        client.Discovery.Acquire("b");
        await pollLetGo.Task.WaitAsync(Scripted.Patience);
        var disposing = client.DisposeAsync().AsTask();

        Assert.False(disposing.IsCompleted);
        pollEnds.SetResult(new HttpResponseMessage(HttpStatusCode.ServiceUnavailable));
        await disposing.WaitAsync(Scripted.Patience);

        Task<HttpResponseMessage> HeldPastCancellation(CancellationToken cancellationToken)
        {
            cancellationToken.Register(() => pollLetGo.TrySetResult());
            return pollEnds.Task;
        }
    }

    [Fact]
    public async Task AChangeCallbackThatThrowsKeepsTheChangeFromNoOtherApplicationOfItsPoll()
    {
        _registered["a"] = [("http", "10.0.0.1:80")];
        _registered["b"] = [("http", "10.0.0.2:80")];
        var (_, client) = NewFactory();
        var watches = new[] { client.Discovery.Acquire("a"), client.Discovery.Acquire("b") };
        await Task.WhenAll(watches.Select(w => w.FirstAnswer)).WaitAsync(Scripted.Patience);
        await Handler.NextAsync(r => r.Uri.Query.Length > 0 && r.Body.Contains("\"a\"", StringComparison.Ordinal) && r.Body.Contains("\"b\"", StringComparison.Ordinal));
        var heard = watches.Select(w =>
        {
            var changed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var token = w.GetChangeToken();
            token.RegisterChangeCallback(_ => changed.TrySetResult(), null);
            token.RegisterChangeCallback(_ => throw new InvalidOperationException("an app's callback"), null);
            return changed.Task;
        }).ToList();

        // Both change; the held poll times out, and the next one, after the backoff's first step, brings both.
        _registered["a"] = [("http", "10.0.0.3:80")];
        _registered["b"] = [("http", "10.0.0.4:80")];
        Clock.Advance(TimeSpan.FromSeconds(41.875));
        await Clock.PassNextDelayAsync(TimeSpan.FromSeconds(1));

        await Task.WhenAll(heard).WaitAsync(Scripted.Patience);
        Assert.Equal(["10.0.0.3:80", "10.0.0.4:80"], watches.Select(w => Assert.Single(w.Endpoints!).Addr));
    }

    [Fact]
    public async Task ARetainedWatchServesItsLastAnswerToANewResolverDuringAnOutage()
    {
        _registered["web"] = [("http", "10.0.0.1:80")];
        var (factory, _) = NewFactory(o => o.DiscoveryRetention = TimeSpan.FromMinutes(10));
        Assert.Single(await ResolveAsync(factory, "http://web"));

        // The resolver went idle and its provider was disposed; then every registry node went down.
        var inner = Handler.Respond;
        Handler.Respond = (_, _) => throw new HttpRequestException("Connection refused");
        Clock.Advance(TimeSpan.FromMinutes(5));

        Assert.Equal(["10.0.0.1:80"], (await ResolveAsync(factory, "http://web")).Select(e => e.EndPoint.ToString()));

        // Past the retention with no resolver, the watch is let go.
        Clock.Advance(TimeSpan.FromMinutes(11));
        Handler.Respond = inner;
        var subscribes = Handler.Count("/v1/subscribe");
        Assert.Single(await ResolveAsync(factory, "http://web"));
        Assert.True(Handler.Sent.Skip(subscribes).Any(r => r.Path == "/v1/subscribe" && r.Uri.Query.Length == 0) || Handler.Count("/v1/subscribe") > subscribes);
    }

    [Fact]
    public async Task AStaleCacheFileOfANewMembershipDoesNotReplaceTheFreshEndpointsOfAWatch()
    {
        var directory = Directory.CreateTempSubdirectory("registry-client-cache-").FullName;
        try
        {
            var fresh = false;
            var down = false;
            Handler.Respond = (r, ct) =>
                down ? throw new HttpRequestException("Connection refused")
                : r.Uri.Query.Length > 0 ? Scripted.HeldAsync(ct)
                : Task.FromResult(fresh
                    ? Scripted.Answer("fresh", ("a", "http", "10.0.0.1:80"))
                    : Scripted.Answer("old", ("a", "http", "10.0.0.99:80"), ("b", "http", "10.0.0.98:80")));

            // An earlier run left the cache file of {a, b}, as they were hours ago.
            await using (var earlier = await NewClient(o => o.CacheDirectory = directory).SubscribeAsync([new SubscriptionEntry("a"), new SubscriptionEntry("b")]))
            {
                await earlier.WaitForFirstAnswerAsync().WaitAsync(Scripted.Patience);
            }

            fresh = true;
            var client = NewClient(o => o.CacheDirectory = directory);
            await using (client)
            {
                var a = client.Discovery.Acquire("a");
                await a.FirstAnswer.WaitAsync(Scripted.Patience);
                Assert.Equal("10.0.0.1:80", Assert.Single(a.Endpoints!).Addr);

                // Every node goes down; then b is resolved for the first time, which regroups a with it.
                down = true;
                var b = client.Discovery.Acquire("b");
                await b.FirstAnswer.WaitAsync(Scripted.Patience);

                // b starts from the file, which is all there is; a keeps what the registry told it.
                Assert.Equal("10.0.0.98:80", Assert.Single(b.Endpoints!).Addr);
                Assert.Equal("10.0.0.1:80", Assert.Single(a.Endpoints!).Addr);
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }

    /// <summary>
    /// Node A serves a; then A dies, and node B, cut off from the database since before A answered, still holds older
    /// endpoints. A subscription refuses such an answer; before, one that replaced it when the group regrouped (b
    /// resolved for the first time) knew nothing and took it, and a's watch went back to endpoints since gone.
    /// </summary>
    [Fact]
    public async Task ARegroupedSubscriptionTakesNoStaleNodesAnswerOlderThanWhatItsGroupKnew()
    {
        var cutOff = Clock.GetUtcNow() - TimeSpan.FromMinutes(2);
        var failedOver = false;
        Handler.Respond = (r, ct) =>
        {
            if (r.Uri.Host == Scripted.ServerA.Host)
            {
                return failedOver ? throw new HttpRequestException("Connection refused")
                    : r.Uri.Query.Length > 0 ? Scripted.HeldAsync(ct)
                    : Task.FromResult(Scripted.Answer("current", ("a", "http", "10.0.0.2:80")));
            }

            var stale = Scripted.Answer("cut-off", ("a", "http", "10.0.0.1:80"), ("b", "http", "10.0.0.3:80"));
            stale.Headers.Add("X-Registry-Stale", "true");
            stale.Headers.Age = Clock.GetUtcNow() - cutOff;
            return Task.FromResult(stale);
        };
        var client = NewClient(null, Scripted.ServerA, Scripted.ServerB);
        await using (client)
        {
            var a = client.Discovery.Acquire("a");
            await a.FirstAnswer.WaitAsync(Scripted.Patience);
            await Handler.NextAsync(r => r.Uri.Host == Scripted.ServerA.Host && r.Uri.Query.Length > 0);

            failedOver = true;
            client.Discovery.Acquire("b");
            await Handler.NextAsync(r => r.Uri.Host == Scripted.ServerB.Host);
            // Left, and backed off as an outage.
            await Clock.NextTimerAsync(d => d > TimeSpan.Zero && d <= TimeSpan.FromSeconds(1) && !Scripted.IsRequestTimeout(d));

            Assert.Equal("10.0.0.2:80", Assert.Single(a.Endpoints!).Addr);
        }
    }

    private sealed class Builder : IServiceEndpointBuilder
    {
        public IList<ServiceEndpoint> Endpoints { get; } = [];

        public IFeatureCollection Features { get; } = new FeatureCollection();

        public List<IChangeToken> Tokens { get; } = [];

        public void AddChangeToken(IChangeToken changeToken) => Tokens.Add(changeToken);
    }
}
