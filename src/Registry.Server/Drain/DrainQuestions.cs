using System.Threading.RateLimiting;
using Microsoft.Extensions.Options;
using Registry.Telemetry;

namespace Registry.Drain;

/// <summary>
/// How often one client may ask the cluster a question (a drain, or who watches): each costs every live node a
/// notification to read, a look-up and an answer that every node hears, so the count of them held at once (the parked
/// limits) is not enough: a client looping on quick questions would fill the nodes' change feeds. A token bucket per
/// client (as <see cref="Edge.Clients"/> counts it) of <see cref="DrainOptions.MaxQuestionsPerSecondPerClient"/>.
/// </summary>
internal sealed class DrainQuestions(IOptions<DrainOptions> options, RegistryMetrics metrics) : IDisposable
{
    private readonly PartitionedRateLimiter<string> _buckets = PartitionedRateLimiter.Create<string, string>(client =>
        RateLimitPartition.GetTokenBucketLimiter(client, _ => new TokenBucketRateLimiterOptions
        {
            TokenLimit = options.Value.MaxQuestionsPerSecondPerClient,
            TokensPerPeriod = options.Value.MaxQuestionsPerSecondPerClient,
            ReplenishmentPeriod = TimeSpan.FromSeconds(1),
            QueueLimit = 0,
            AutoReplenishment = true,
        }));

    /// <summary>What a 429 at this limit says.</summary>
    public const string TooMany = "This client has asked the nodes as many drain and watchers questions this second as it may (Registry:Drain:MaxQuestionsPerSecondPerClient); retry shortly.";

    /// <summary>Whether <paramref name="client"/> may ask one now (it is then counted).</summary>
    public bool TryAsk(string client)
    {
        using var lease = _buckets.AttemptAcquire(client);
        if (!lease.IsAcquired)
        {
            metrics.LimitReached("drain_questions_per_client");
        }

        return lease.IsAcquired;
    }

    public void Dispose() => _buckets.Dispose();
}
