using System.Net;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Registry.Subscription;

namespace Registry.Tests.Infrastructure;

/// <summary>Holds the loader's thread where a change to the application is about to be recomposed, while told to.</summary>
internal sealed class HeldRecomposition(string application) : IChangeWitness
{
    private readonly SemaphoreSlim _released = new(0);
    private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _holding;

    public Task Entered => _entered.Task;

    public void Hold() => _holding = true;

    public void Release() => _released.Release();

    /// <summary>
    /// Registers an instance of <paramref name="application"/> on <paramref name="node"/> and
    /// parks a consumer on its answer, which keeps its view (an idle one would be dropped by the
    /// change): the application's next change is recomposed, and held when asked. Returns the
    /// version parked on and the parked poll.
    /// </summary>
    public static async Task<(string Version, Task<(int Status, string? Version, JsonNode? Body)> Poll)> RegisterAndParkAsync(
        WebApplicationFactory<Program> node, HttpClient client, string application, string addr)
    {
        using var notified = MeterWatch.Node(node, "registry.changefeed.notifications");
        using (var response = await client.PostJsonAsync("/v1/register", Http.Provider(application, addr)))
        {
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }

        // Its own notification received, and a pass of the loader after it: on a loaded machine the
        // write may have been answered by reading its rows directly, and its notification, applied
        // late like another node's, would carry the test's next write into a pass (the one held)
        // that does not answer that write.
        await notified.WaitForAsync(1);
        await node.Services.GetRequiredService<Registry.ChangeFeed.RegistryLoader>().ReloadAllAsync();

        var subscription = Http.Subscription(Http.Entry(application));
        var (_, version, _) = await client.SubscribeAsync(subscription);
        using var parked = ParkedPolls.On(node);
        var poll = client.SubscribeAsync(subscription, version, wait: 30);
        await parked.WaitForAsync(1);
        return (version!, poll);
    }

    public IChangeRecord? Begin(IReadOnlyCollection<string> applications)
    {
        if (_holding && applications.Contains(application))
        {
            _holding = false;
            _entered.TrySetResult();
            // Synchronous, as the loader's call is; bounded so a broken test cannot hang the suite.
            _released.Wait(TimeSpan.FromSeconds(30));
        }

        return null;
    }
}
