using Registry.ChangeFeed;

namespace Registry.Operations;

/// <summary>
/// The database side of <c>/readyz</c>, run at most once a second however often it is asked
/// (concurrent callers share the check under way): an orchestrator, a load balancer and a
/// dashboard polling every node must not become the database's load. One statement proves
/// both the database and the change feed (a NOTIFY that must come back); the migrations were
/// applied before the node started serving.
/// </summary>
internal sealed class ReadinessProbe(ChangeFeedListener feed, TimeProvider time)
{
    /// <summary>The checks' names, as <c>/readyz</c> reports them to an admin.</summary>
    public static readonly IReadOnlyList<string> Checks = ["database", "migrations", "changeFeed"];

    /// <summary>How long a result is reused.</summary>
    public static readonly TimeSpan ReuseFor = TimeSpan.FromSeconds(1);

    private readonly Lock _gate = new();
    private Task<IReadOnlyDictionary<string, CheckResult>>? _last;
    private long _startedAt;

    public Task<IReadOnlyDictionary<string, CheckResult>> CheckAsync()
    {
        lock (_gate)
        {
            if (_last is null || (_last.IsCompleted && time.GetElapsedTime(_startedAt) >= ReuseFor))
            {
                _startedAt = time.GetTimestamp();
                // Not the caller's token: the check is shared, and bounded by the feed's timeout.
                _last = RunAsync();
            }

            return _last;
        }
    }

    private async Task<IReadOnlyDictionary<string, CheckResult>> RunAsync()
    {
        var roundTrip = await feed.RoundTripAsync(CancellationToken.None);
        return new Dictionary<string, CheckResult>(StringComparer.Ordinal)
        {
            ["database"] = roundTrip.DatabaseError is { } error ? new CheckResult(false, $"unreachable: {error}") : new CheckResult(true, "reachable"),
            ["migrations"] = new CheckResult(true, "applied at start"),
            ["changeFeed"] = roundTrip.Echoed
                ? new CheckResult(true, "listening; a notification round trip succeeded")
                : new CheckResult(false, feed.LostAt is { } lostAt ? $"not listening since {lostAt:O}" : "no notification round trip within the timeout"),
        };
    }
}
