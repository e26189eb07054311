using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Registry.Client.Tests.Infrastructure;

namespace Registry.Client.Tests;

/// <summary>A provider's graceful shutdown against a real registry node.</summary>
public sealed class DrainTests(ClientFixture fixture) : ClientTest(fixture)
{
    [Fact]
    public async Task DrainAsyncAnswersOnceTheWatchingConsumerHasBeenToldTheInstanceLeft()
    {
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:9201");
        var lease = await NewClient().RegisterAsync(instance);
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry(instance.Application));
        await subscription.WaitForAsync(a => a.Has(instance));
        await WaitForParkedAsync(instance.Application);

        var result = await lease.DrainAsync(TimeSpan.FromSeconds(10));

        Assert.Equal((1, 0, 1, true, true), (result.Delivered, result.Pending, result.Nodes, result.Complete, result.Removed));
        await subscription.WaitForAsync(a => !a.Has(instance));
    }

    [Fact]
    public async Task TheHostedRegistrationDrainsBeforeTheHostStops()
    {
        var instance = new ProviderInstance(UniqueName(), "http", "127.0.0.1:9202");
        var builder = Host.CreateApplicationBuilder();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["RegistryClient:Servers:0"] = Fixture.Node.Url.ToString(),
            ["RegistryClient:DrainTimeout"] = "00:00:05",
        });
        builder.Logging.AddProvider(Logs);
        builder.Services.AddRegistryClient();
        builder.Services.AddRegistryRegistration(instance);
        using var host = builder.Build();
        await using var subscription = await NewClient().SubscribeAsync(new SubscriptionEntry(instance.Application));
        await host.StartAsync();
        await subscription.WaitForAsync(a => a.Has(instance));
        await WaitForParkedAsync(instance.Application);

        await host.StopAsync();

        Assert.Contains(Logs.Entries, e => e.Message == $"Drained {instance}: 1 consumers told, 0 pending, 1 registry nodes reported, complete True");
        await subscription.WaitForAsync(a => !a.Has(instance));
    }

    /// <summary>The consumer parks again right after its first answer; the registry's watchers view says when.</summary>
    private async Task WaitForParkedAsync(string application)
    {
        using var http = new HttpClient { BaseAddress = Fixture.Node.Url };
        using var deadline = new CancellationTokenSource(Patience);
        while (true)
        {
            var watchers = (await http.GetFromJsonAsync<JsonObject>($"v1/services/{application}/watchers", deadline.Token))!;
            if (watchers["nodes"]!.AsArray().Sum(n => (int)n!["parked"]!) == 1)
            {
                return;
            }

            await Task.Delay(20, deadline.Token);
        }
    }
}
