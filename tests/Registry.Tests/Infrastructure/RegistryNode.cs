using System.Net.Http.Json;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Registry.ChangeFeed;

namespace Registry.Tests.Infrastructure;

/// <summary>One real host of the service (its own change feed, memory and sweeper) on the shared database.</summary>
public sealed class RegistryNode : WebApplicationFactory<Program>
{
    private readonly Dictionary<string, string?> _settings;
    private readonly Microsoft.Extensions.Logging.ILoggerProvider? _logs;

    public RegistryNode(string connectionString, IReadOnlyDictionary<string, string?>? overrides = null, Microsoft.Extensions.Logging.ILoggerProvider? logs = null)
    {
        _logs = logs;
        _settings = new Dictionary<string, string?>(TestSettings.Fast)
        {
            ["ConnectionStrings:Registry"] = connectionString,
        };
        foreach (var (key, value) in overrides ?? new Dictionary<string, string?>())
        {
            _settings[key] = value;
        }
    }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        foreach (var (key, value) in _settings)
        {
            builder.UseSetting(key, value);
        }

        if (_logs is not null)
        {
            builder.ConfigureLogging(logging => logging.AddProvider(_logs));
        }
    }

    /// <summary>Makes the node forget what it holds and load the database again (after a reset).</summary>
    internal Task ReloadAsync() => Services.GetRequiredService<RegistryLoader>().ReloadAllAsync();

    internal T Get<T>()
        where T : notnull => Services.GetRequiredService<T>();

    public Task<HttpResponseMessage> RegisterAsync(object provider, int? ttl = null) =>
        CreateClient().PostAsJsonAsync(ttl is null ? "/v1/register" : $"/v1/register?ttl={ttl}", provider);
}
