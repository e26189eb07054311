using System.Diagnostics.Metrics;
using System.Globalization;
using System.IO.Pipelines;
using Microsoft.Extensions.Options;
using Registry.Model;
using Registry.State;
using Registry.Telemetry;

namespace Registry.Subscription;

/// <summary>
/// Runs the change path of subscriptions on a private registry before the node serves: an
/// instance replaced in a large application, its fragments recomputed from the previous ones,
/// the answers that include them recomposed and published, a parked consumer woken and a large
/// answer written. A fresh node's first change to an application with parked consumers otherwise
/// compiles all of that on the loader's thread before the write that caused it is answered
/// (traced in the overlap benchmark: about 10 of its 13–17 ms). Nothing here touches the node's
/// registry, metrics or database. It runs beside the node's start (the full load of the
/// registry, on another thread), not before it: on a cold start the second core is otherwise idle.
/// </summary>
internal sealed class SubscriptionWarmUp(IHostApplicationLifetime lifetime, TimeProvider time) : BackgroundService
{
    /// <summary>Changes run: more than the calls after which the tiered JIT recompiles a method as hot.</summary>
    private const int Rounds = 40;

    private const string Big = "warm-up";

    private const string Small = "warm-up-small";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await Task.Yield(); // off the host's start, which goes on to load the registry
        using var meters = new PrivateMeters();
        var metrics = new RegistryMetrics(meters, RegistryMetrics.MeterName + ".WarmUp");
        var state = new RegistryState();
        var options = Options.Create(new SubscriptionOptions());
        var hub = new SubscriptionHub(state, metrics, Options.Create(new LimitsOptions()), options, time, lifetime, []);
        var writers = new AnswerWriters(options, time, metrics);
        // Large enough to be written in turns and flushes, as a big provider's answer is.
        var big = Enumerable.Range(0, 200).Select(i => Sample(Big, i, revision: 1)).ToArray();
        state.Replace([new ApplicationSnapshot(Big, big), new ApplicationSnapshot(Small, [Sample(Small, 0, revision: 1)])]);
        var single = hub.Acquire([new SubscriptionEntry(Big, null, Meta.Empty)]);
        var overlapping = hub.Acquire([new SubscriptionEntry(Big, "http", Meta.Empty), new SubscriptionEntry(Small, null, Meta.Empty)]);
        try
        {
            for (var round = 2; round < Rounds + 2; round++)
            {
                _ = single.Park(new ParkedConsumer(), single.Current.Version);
                var replaced = Sample(Big, round % big.Length, round);
                state.Replace([state.Get(Big)!.With([replaced.Key], [replaced])]);
                List<TaskCompletionSource> wakes = [];
                hub.ApplicationsChanged([Big]);
                hub.Recompose(wakes);
                wakes.ForEach(wake => wake.TrySetResult());

                foreach (var view in new[] { single, overlapping })
                {
                    await view.Current.WriteAsync(PipeWriter.Create(Stream.Null), writers, stoppingToken);
                }
            }
        }
        finally
        {
            hub.Release(single);
            hub.Release(overlapping);
        }
    }

    private Instance Sample(string application, int i, long revision) => new(
        new InstanceKey(application, "http", $"10.0.{i / 256}.{i % 256}:8080"),
        Meta.From([new("zone", $"zone-{i % 3}"), new("revision", revision.ToString(CultureInfo.InvariantCulture)), new("labels", new string('x', 400))]),
        60,
        time.GetUtcNow().AddMinutes(1),
        revision);

    /// <summary>Meters of the warm-up's own, under a name the metrics endpoint does not export.</summary>
    private sealed class PrivateMeters : IMeterFactory
    {
        private readonly List<Meter> _meters = [];

        public Meter Create(MeterOptions options)
        {
            var meter = new Meter(options);
            _meters.Add(meter);
            return meter;
        }

        public void Dispose() => _meters.ForEach(meter => meter.Dispose());
    }
}
