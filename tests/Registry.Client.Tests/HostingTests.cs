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

    /// <summary>
    /// A long poll is silent for its whole wait, and a node whose host crashed or whose network was cut sends nothing,
    /// not even a reset. The client from the container turns TCP keep-alive on, so the kernel notices: its keep-alive
    /// timer runs on a held poll's connection (Linux lists it in /proc/net/tcp as timer 2). Before, no timer ran, and
    /// such a node cost each held poll its whole wait and margin before the next node was asked.
    /// </summary>
    [Fact]
    public async Task AHeldPollsConnectionHasTheKernelsKeepAliveTimer()
    {
        if (!OperatingSystem.IsLinux())
        {
            return; // the kernel's table is Linux's
        }

        var before = ConnectionsTo(Fixture.Node.Port);
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddRegistryClient(o => Configure(o));
        await using var provider = services.BuildServiceProvider();

        await using var subscription = await provider.GetRequiredService<RegistryClient>().SubscribeAsync(new SubscriptionEntry(UniqueName()));
        await subscription.WaitForAsync(_ => true);
        // The next poll is sent at once; until it is acknowledged the retransmission timer (1) shows instead. Nothing
        // signals the kernel's timers but its table: read it until that has passed.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var opened = Opened();
        while (opened.Any(c => c.Timer == 1) && clock.Elapsed < Patience)
        {
            await Task.Delay(20);
            opened = Opened();
        }

        Assert.NotEmpty(opened);
        Assert.All(opened, c => Assert.Equal(2, c.Timer));

        List<(int LocalPort, int Timer)> Opened() => ConnectionsTo(Fixture.Node.Port).ExceptBy(before.Select(c => c.LocalPort), c => c.LocalPort).ToList();
    }

    private static readonly string[] KernelTables = ["/proc/net/tcp", "/proc/net/tcp6"];

    /// <summary>This machine's established TCP connections to <paramref name="port"/>: their local ports, and the kernel timer pending on each.</summary>
    private static List<(int LocalPort, int Timer)> ConnectionsTo(int port) =>
        KernelTables.SelectMany(File.ReadLines)
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Where(fields => fields.Length > 5 && fields[1] != "local_address" && fields[3] == "01" && PortOf(fields[2]) == port)
            .Select(fields => (PortOf(fields[1]), Convert.ToInt32(fields[5].Split(':')[0], 16)))
            .ToList();

    private static int PortOf(string address) => Convert.ToInt32(address[(address.LastIndexOf(':') + 1)..], 16);

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
