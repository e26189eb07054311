using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Registry.Client.Tests.Infrastructure;

namespace Registry.Client.Tests;

public sealed class HostingTests(ClientFixture fixture) : ClientTest(fixture)
{
    [Fact]
    public async Task TheHostedServiceRegistersTheApplicationAtStartAndUnregistersAtStop()
    {
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:9001");
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddRegistryClient(o => Configure(o));
        builder.Services.AddRegistryRegistration(instance);
        using var host = builder.Build();
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry(instance.Application));

        await host.StartAsync();
        await subscription.WaitForAsync(a => a.Has(instance));

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
