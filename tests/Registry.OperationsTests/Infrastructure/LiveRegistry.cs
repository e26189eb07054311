using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.OperationsTests.Infrastructure;

/// <summary>
/// One registry node on a real Kestrel port (127.0.0.1, chosen by the system) over its own
/// test database: what a browser, curl or bash can reach, unlike the in-memory test server.
/// </summary>
/// <remarks>
/// The node gets a database of its own on the test server, because a shared server (CI's
/// REGISTRY_TEST_CONNECTION_STRING) also serves the main suite, whose Respawn resets would
/// empty the tables under these tests when the two assemblies run in parallel.
/// </remarks>
public sealed class LiveRegistry : IAsyncLifetime
{
    private TestDatabase? _database;
    private string? _serverConnectionString;
    private string? _databaseName;

    /// <summary>
    /// An admin credential the node accepts (it runs Open, so calls without one work too):
    /// the runbook's $TOKEN and what the Swagger UI test authorizes with.
    /// </summary>
    public string Token { get; } = "runbook-" + Guid.NewGuid().ToString("N") + Guid.NewGuid().ToString("N");

    public RegistryNode Node { get; private set; } = null!;

    /// <summary>The node's base address, e.g. <c>http://127.0.0.1:41234</c> (no trailing slash).</summary>
    public string BaseAddress { get; private set; } = "";

    public async Task InitializeAsync()
    {
        _database = await TestDatabase.StartAsync();
        _serverConnectionString = _database.ConnectionString;
        _databaseName = $"registry_operations_{Guid.NewGuid():N}";
        await ExecuteAsync($"CREATE DATABASE {_databaseName}");
        var own = new NpgsqlConnectionStringBuilder(_serverConnectionString) { Database = _databaseName };
        Node = new RegistryNode(own.ConnectionString, new Dictionary<string, string?>
        {
            ["Registry:Auth:BootstrapToken"] = Token,
            // The runbook's probe example probes the node itself.
            ["Registry:Probes:AllowedNetworks:0"] = "127.0.0.0/8",
        });
        Node.UseKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0));
        Node.StartServer(); // migrates, listens and loads before Kestrel accepts
        var addresses = Node.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        BaseAddress = addresses.Single().TrimEnd('/');
    }

    public HttpClient CreateClient() => new() { BaseAddress = new Uri(BaseAddress) };

    private async Task ExecuteAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(_serverConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    public async Task DisposeAsync()
    {
        if (Node is not null)
        {
            await Node.DisposeAsync();
        }

        if (_databaseName is not null)
        {
            NpgsqlConnection.ClearAllPools();
            await ExecuteAsync($"DROP DATABASE IF EXISTS {_databaseName} WITH (FORCE)");
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
