using System.Net.Http.Json;
using Microsoft.Extensions.Logging;
using Registry.Tests.Infrastructure;

namespace Registry.Client.Tests.Infrastructure;

/// <summary>The collection's shared fixture: one database and one long-lived node on it. Tests isolate themselves by unique application names.</summary>
public sealed class ClientFixture : IAsyncLifetime
{
    private TestDatabase? _database;

    public string ConnectionString => _database?.ConnectionString ?? throw new InvalidOperationException("Not started.");

    /// <summary>The node that stays up for the whole collection.</summary>
    public RegistryServer Node { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        _database = await TestDatabase.StartAsync();
        Node = RegistryServer.Start(ConnectionString);
    }

    public async Task DisposeAsync()
    {
        await Node.DisposeAsync();
        if (_database is not null)
        {
            await _database.DisposeAsync();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class ClientTestsDefinition : ICollectionFixture<ClientFixture>
{
    public const string Name = "client";
}

/// <summary>Base of the tests: fast client settings, a counting handler, captured logs.</summary>
[Collection(ClientTestsDefinition.Name)]
public abstract class ClientTest(ClientFixture fixture) : IDisposable
{
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private readonly List<IDisposable> _owned = [];

    protected ClientFixture Fixture { get; } = fixture;

    protected CapturedLogs Logs { get; } = new();

    /// <summary>A name no other test uses (the database is shared).</summary>
    protected static string UniqueName(string prefix = "app") => $"{prefix}-{Guid.NewGuid():N}"[..24];

    /// <summary>A client over a plain <see cref="HttpClient"/> with short delays; <paramref name="handler"/> counts or breaks requests.</summary>
    protected RegistryClient NewClient(IEnumerable<Uri> servers, CountingHandler? handler = null, Action<RegistryClientOptions>? configure = null)
    {
        var options = FastOptions(servers);
        configure?.Invoke(options);
        var http = new HttpClient(handler ?? new CountingHandler());
        _owned.Add(http);
        var loggers = LoggerFactory.Create(logging => logging.AddProvider(Logs).SetMinimumLevel(LogLevel.Debug));
        _owned.Add(loggers);
        return new RegistryClient(http, options, loggers);
    }

    protected RegistryClient NewClient(CountingHandler? handler = null, Action<RegistryClientOptions>? configure = null) =>
        NewClient([Fixture.Node.Url], handler, configure);

    public static RegistryClientOptions FastOptions(IEnumerable<Uri> servers)
    {
        var options = new RegistryClientOptions
        {
            Ttl = TimeSpan.FromSeconds(1),
            PollWait = TimeSpan.FromSeconds(5),
            RequestTimeout = TimeSpan.FromSeconds(2),
            RetryBaseDelay = TimeSpan.FromMilliseconds(50),
            RetryMaxDelay = TimeSpan.FromMilliseconds(500),
        };
        foreach (var server in servers)
        {
            options.Servers.Add(server);
        }

        return options;
    }

    /// <summary>For conditions with no event to await (request counts, a flag, a state); checks every 20 ms up to the deadline.</summary>
    protected static async Task Eventually(Func<bool> condition)
    {
        using var deadline = new CancellationTokenSource(Patience);
        while (!condition())
        {
            await Task.Delay(20, deadline.Token);
        }
    }

    /// <summary>Registers without the client: a provider that never heartbeats.</summary>
    protected async Task RegisterOnceAsync(ProviderInstance instance, int ttlSeconds)
    {
        using var http = new HttpClient { BaseAddress = Fixture.Node.Url };
        using var response = await http.PostAsJsonAsync($"v1/register?ttl={ttlSeconds}", new
        {
            application = instance.Application,
            protocol = instance.Protocol,
            addr = instance.Addr,
            meta = instance.Meta,
        });
        response.EnsureSuccessStatusCode();
    }

    public void Dispose()
    {
        foreach (var owned in _owned)
        {
            owned.Dispose();
        }

        GC.SuppressFinalize(this);
    }
}
