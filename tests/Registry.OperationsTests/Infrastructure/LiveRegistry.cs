using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Registry.Tests.Infrastructure;

namespace Registry.OperationsTests.Infrastructure;

/// <summary>
/// One registry node on a real Kestrel port (127.0.0.1, chosen by the system) over its own
/// test database: what a browser, curl or bash can reach, unlike the in-memory test server.
/// </summary>
public sealed class LiveRegistry : IAsyncLifetime
{
    private TestDatabase? _database;

    public RegistryNode Node { get; private set; } = null!;

    /// <summary>The node's base address, e.g. <c>http://127.0.0.1:41234</c> (no trailing slash).</summary>
    public string BaseAddress { get; private set; } = "";

    public async Task InitializeAsync()
    {
        _database = await TestDatabase.StartAsync();
        Node = new RegistryNode(_database.ConnectionString);
        Node.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
        Node.StartServer(); // migrates, listens and loads before Kestrel accepts
        var addresses = Node.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        BaseAddress = addresses.Single().TrimEnd('/');
    }

    public HttpClient CreateClient() => new() { BaseAddress = new Uri(BaseAddress) };

    public async Task DisposeAsync()
    {
        if (Node is not null)
        {
            await Node.DisposeAsync();
        }

        if (_database is not null)
        {
            await _database.DisposeAsync();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class LiveRegistryDefinition : ICollectionFixture<LiveRegistry>
{
    public const string Name = "live registry";
}
