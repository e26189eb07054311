using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Registry.Membership;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>The nodes table as <c>GET /v1/nodes</c> shows it, and how ownership is spread over it.</summary>
public sealed class MembershipTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    [Fact]
    public async Task GetNodesListsTheLiveNodesWithTheirUrlsAndForgetsOneThatStopped()
    {
        var database = await Cluster.CreateDatabaseAsync();
        await using var listening = new RegistryNode(database);
        listening.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
        listening.StartServer();
        var address = listening.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single().TrimEnd('/');
        await using var configured = new RegistryNode(database, new Dictionary<string, string?>
        {
            ["Registry:Membership:AdvertisedUrl"] = "http://registry-b.example:5080/",
            ["Registry:Probes:AllowedNetworks:0"] = "10.0.0.0/8",
            ["Registry:Probes:AllowedNetworks:1"] = "192.168.7.9",
        });
        using var client = configured.CreateClient();

        var nodes = await NodesAsync(client, n => n.Count == 2 && n.All(node => node.Url is not null));

        Assert.Contains(nodes, n => n.Id == listening.Get<NodeIdentity>().Id && n.Url == address && n.ProbeNetworks is null);
        Assert.Contains(nodes, n => n.Id == configured.Get<NodeIdentity>().Id && n.Url == "http://registry-b.example:5080"
            && n.ProbeNetworks is ["10.0.0.0/8", "192.168.7.9/32"]);
        Assert.All(nodes, n => Assert.True(n.Started <= n.LastSeen));
        Assert.Equal(nodes.Select(n => n.Id).Order(StringComparer.Ordinal), nodes.Select(n => n.Id));

        await listening.DisposeAsync();
        var left = await NodesAsync(client, n => n.Count == 1);
        Assert.Equal(configured.Get<NodeIdentity>().Id, Assert.Single(left).Id);
    }

    [Theory]
    [InlineData("http://0.0.0.0:5080", "http://registry-3:5080")]
    [InlineData("http://[::]:5080/", "http://registry-3:5080")]
    [InlineData("http://+:80", "http://registry-3:80")]
    [InlineData("https://*:443", "https://registry-3:443")]
    [InlineData("http://127.0.0.1:5080/", "http://127.0.0.1:5080")]
    [InlineData("http://[::1]:5080", "http://[::1]:5080")]
    public void AWildcardListeningAddressIsAdvertisedUnderTheHostName(string listening, string advertised) =>
        Assert.Equal(advertised, AdvertisedUrl.Reachable(listening, "registry-3"));

    [Fact]
    public void TheListeningAddressIsAdvertisedOnlyOnceTheServerHasStarted()
    {
        // Before Kestrel binds, the host has filled the addresses from the Urls setting; the
        // endpoints Kestrel binds (here a port 0) replace them. Marks in between carry no URL.
        var addresses = new ServerAddressesFeature();
        addresses.Addresses.Add("http://localhost:5080");
        var server = new AddressesOnly(addresses);
        using var lifetime = new StartedSignal();
        var url = new AdvertisedUrl(Options.Create(new MembershipOptions()), server, lifetime);

        Assert.Null(url.Value);
        addresses.Addresses.Clear();
        addresses.Addresses.Add("http://127.0.0.1:41234");
        lifetime.Start();
        Assert.Equal("http://127.0.0.1:41234", url.Value);
    }

    [Fact]
    public void RendezvousSpreadsItemsAndMovesOnlyTheLeavingNodesOnes()
    {
        string[] three = ["a1b2c3d4e5f6", "0123456789ab", "fedcba987654"];
        var items = Enumerable.Range(0, 3000).Select(i => $"app{i}\nhttp\n10.0.{i / 256}.{i % 256}:80").ToList();
        var before = items.ToDictionary(i => i, i => Rendezvous.Owner(i, three)!);

        Assert.All(three, node => Assert.InRange(before.Values.Count(owner => owner == node), 800, 1200));
        var after = items.ToDictionary(i => i, i => Rendezvous.Owner(i, [three[0], three[2]])!);
        Assert.All(items, i => Assert.True(before[i] == three[1] || after[i] == before[i], $"{i} moved though its owner stayed"));
        Assert.DoesNotContain(three[1], after.Values);
        Assert.Null(Rendezvous.Owner("anything", []));
    }

    private sealed class AddressesOnly : IServer
    {
        public AddressesOnly(IServerAddressesFeature addresses) => Features.Set(addresses);

        public IFeatureCollection Features { get; } = new FeatureCollection();

        public void Dispose()
        {
        }

        public Task StartAsync<TContext>(IHttpApplication<TContext> application, CancellationToken cancellationToken)
            where TContext : notnull => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    private sealed class StartedSignal : IHostApplicationLifetime, IDisposable
    {
        private readonly CancellationTokenSource _started = new();

        public CancellationToken ApplicationStarted => _started.Token;

        public CancellationToken ApplicationStopping => CancellationToken.None;

        public CancellationToken ApplicationStopped => CancellationToken.None;

        public void Start() => _started.Cancel();

        public void StopApplication()
        {
        }

        public void Dispose() => _started.Dispose();
    }

    private sealed record NodeEntry(string Id, string? Url, DateTimeOffset Started, DateTimeOffset LastSeen, string[]? ProbeNetworks);

    /// <summary>Nodes mark themselves every liveness interval: look until the list is as expected.</summary>
    private static async Task<List<NodeEntry>> NodesAsync(HttpClient client, Func<List<NodeEntry>, bool> done)
    {
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (true)
        {
            using var response = await client.GetAsync(new Uri("/v1/nodes", UriKind.Relative), deadline.Token);
            response.EnsureSuccessStatusCode();
            var nodes = (await response.ReadJsonAsync())["nodes"]!.AsArray()
                .Select(n => new NodeEntry((string)n!["id"]!, (string?)n["url"], (DateTimeOffset)n["started"]!, (DateTimeOffset)n["lastSeen"]!,
                    n["probeNetworks"]?.AsArray().Select(a => (string)a!).ToArray()))
                .ToList();
            if (done(nodes))
            {
                return nodes;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100), deadline.Token);
        }
    }
}
