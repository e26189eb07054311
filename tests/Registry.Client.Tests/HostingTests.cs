using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.ServiceDiscovery;
using Registry.Client.Tests.Infrastructure;

namespace Registry.Client.Tests;

public sealed class HostingTests(ClientFixture fixture) : ClientTest(fixture)
{
    [Fact]
    public async Task TheHostedServiceRegistersTheApplicationAtStartAndUnregistersAtStop()
    {
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:9001");
        var builder = Host.CreateApplicationBuilder();
        // Through configuration, as an application's appsettings.json would give it.
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["RegistryClient:Servers:0"] = Fixture.Node.Url.ToString(),
            ["RegistryClient:Ttl"] = "00:00:01",
            ["RegistryClient:RetryBaseDelay"] = "00:00:00.050",
            ["RegistryClient:RetryMaxDelay"] = "00:00:00.500",
        });
        builder.Services.AddRegistryClient();
        builder.Services.AddRegistryRegistration(instance);
        using var host = builder.Build();
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry(instance.Application));

        await host.StartAsync();
        await subscription.WaitForAsync(a => a.Has(instance));
        Assert.Equal(TimeSpan.FromSeconds(1), host.Services.GetRequiredService<Microsoft.Extensions.Options.IOptions<RegistryClientOptions>>().Value.Ttl);

        await host.StopAsync();
        await subscription.WaitForAsync(a => !a.Has(instance));
    }

    [Fact]
    public async Task TheServiceDiscoveryProviderResolvesARegisteredApplication()
    {
        // The "provider" is the fixture's registry node itself: a real HTTP server to call.
        var application = UniqueName("provider_test");
        await RegisterOnceAsync(new ProviderInstance(application, "http", $"127.0.0.1:{Fixture.Node.Port}"), ttlSeconds: 3600);
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddRegistryClient(o => Configure(o));
        services.AddRegistryServiceEndpointProvider();
        services.AddHttpClient("consumer", http => http.BaseAddress = new Uri($"http://{application}")).AddServiceDiscovery();
        await using var provider = services.BuildServiceProvider();

        using var http = provider.GetRequiredService<IHttpClientFactory>().CreateClient("consumer");
        using var response = await http.GetAsync(new Uri("/v1/services", UriKind.Relative));

        // Only the registry node knows this application: the name was resolved to it.
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Contains(application, await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheServiceDiscoveryProviderFollowsTheRegistryAndKeepsToTheScheme()
    {
        var application = UniqueName("provider_test");
        await RegisterOnceAsync(new ProviderInstance(application, "http", "127.0.0.1:9101"), ttlSeconds: 3600);
        await RegisterOnceAsync(new ProviderInstance(application, "grpc", "127.0.0.1:9103"), ttlSeconds: 3600);
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddRegistryClient(o => Configure(o));
        services.AddRegistryServiceEndpointProvider();
        await using var provider = services.BuildServiceProvider();
        var resolver = provider.GetRequiredService<ServiceEndpointResolver>();
        using var deadline = new CancellationTokenSource(Patience);

        var endpoints = await resolver.GetEndpointsAsync($"http://{application}", deadline.Token);
        Assert.Equal(["127.0.0.1:9101"], endpoints.Endpoints.Select(e => e.EndPoint.ToString()));

        // The subscription's change token makes the resolver refresh; it does so in the background, hence the loop.
        await RegisterOnceAsync(new ProviderInstance(application, "http", "127.0.0.1:9102"), ttlSeconds: 3600);
        while (endpoints.Endpoints.Count < 2)
        {
            await Task.Delay(20, deadline.Token);
            endpoints = await resolver.GetEndpointsAsync($"http://{application}", deadline.Token);
        }

        Assert.Equal(["127.0.0.1:9101", "127.0.0.1:9102"], endpoints.Endpoints.Select(e => e.EndPoint.ToString()));
    }

    private void Configure(RegistryClientOptions options)
    {
        var fast = FastOptions([Fixture.Node.Url]);
        options.Servers.Add(Fixture.Node.Url);
        options.Ttl = fast.Ttl;
        options.PollWait = fast.PollWait;
        options.RetryBaseDelay = fast.RetryBaseDelay;
        options.RetryMaxDelay = fast.RetryMaxDelay;
    }
}
