using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Registry.Edge;
using Registry.Model;
using Registry.Telemetry;

namespace Registry.Drain;

/// <summary>
/// How often one client may ask the cluster a question (a drain, or who watches): each costs every live node a
/// notification to read, a look-up and an answer that every node hears, so the count of them held at once (the parked
/// limits) is not enough: a client looping on quick questions would fill the nodes' change feeds. A token bucket per
/// client (as <see cref="Clients"/> counts it) of <see cref="DrainOptions.MaxQuestionsPerSecondPerClient"/>.
/// </summary>
internal sealed class DrainQuestions(IOptions<DrainOptions> options, RegistryMetrics metrics) : IDisposable
{
    private readonly PartitionedRateLimiter<string> _buckets = PartitionedRateLimiter.Create<string, string>(client =>
        RateLimitPartition.GetTokenBucketLimiter(client, _ => PerClientRateLimitPolicy.Bucket(options.Value.MaxQuestionsPerSecondPerClient, options.Value.MaxQuestionsPerSecondPerClient)));

    /// <summary>Counts a question of <paramref name="client"/>; a 429 with Retry-After when it has asked as many as it may this second.</summary>
    public ProblemHttpResult? Refuse(HttpContext http, string client)
    {
        using var lease = _buckets.AttemptAcquire(client);
        if (lease.IsAcquired)
        {
            return null;
        }

        metrics.LimitReached("drain_questions_per_client");
        return Problems.TooMany(http, PerClientRateLimitPolicy.RetryAfterSeconds(lease),
            "This client has asked the nodes as many drain and watchers questions this second as it may (Registry:Drain:MaxQuestionsPerSecondPerClient); retry shortly.");
    }

    public void Dispose() => _buckets.Dispose();
}
