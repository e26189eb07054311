using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Registry.Tests.Infrastructure;

namespace Registry.Client.Tests.Infrastructure;

/// <summary>
/// A real registry node on a real loopback port (Kestrel, not the in-memory test server): the
/// client speaks real HTTP, and "every node stopped" or "a dead URL" need real sockets.
/// Stopping one and starting another on the same port is a node going down and coming back.
/// </summary>
public sealed class RegistryServer : WebApplicationFactory<Program>
{
    private readonly string _connectionString;

    private RegistryServer(string connectionString, int port)
    {
        _connectionString = connectionString;
        Port = port;
        Url = new Uri($"http://127.0.0.1:{port}/");
        UseKestrel(options => options.Listen(IPAddress.Loopback, port));
    }

    public int Port { get; }

    public Uri Url { get; }

    /// <summary>Starts a node on <paramref name="port"/>, or on a free port when none is given.</summary>
    public static RegistryServer Start(string connectionString, int? port = null)
    {
        var server = new RegistryServer(connectionString, port ?? FreePort());
        server.StartServer();
        return server;
    }

    /// <summary>A loopback port nothing listens on (for a dead URL, or a node to start later).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        foreach (var (key, value) in TestSettings.Fast)
        {
            builder.UseSetting(key, value);
        }

        builder.UseSetting("ConnectionStrings:Registry", _connectionString);
    }
}
