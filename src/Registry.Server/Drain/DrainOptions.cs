using System.ComponentModel.DataAnnotations;

namespace Registry.Drain;

/// <summary>Confirmed drain and the watchers view (section <c>Registry:Drain</c>).</summary>
public sealed class DrainOptions
{
    /// <summary>Largest <c>drain</c> an unregistration may ask for, in seconds; larger is 400.</summary>
    [Range(1, 3600)]
    public int MaxDrainSeconds { get; set; } = 60;

    /// <summary>Least time between two progress reports a node sends about one drain (its final report goes at once).</summary>
    public TimeSpan ReportInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>How often a waiting drain looks at the live nodes again (Registry:Membership), so a node that died stops being waited for.</summary>
    public TimeSpan NodesRefreshInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>How long the watchers view waits for the live nodes to answer; the nodes that answered by then are shown.</summary>
    public TimeSpan WatchersWait { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Drain and watchers questions one client (its address, an IPv6 one as its network, and credential) may ask a
    /// second; beyond, 429. Each costs every live node a notification, a look-up and an answer.
    /// </summary>
    [Range(1, 1_000_000)]
    public int MaxQuestionsPerSecondPerClient { get; set; } = 20;

    /// <summary>The Retry-After sent with a 503 when the database cannot carry a question to the nodes, in seconds.</summary>
    [Range(1, 3600)]
    public int RetryAfterSeconds { get; set; } = 2;
}
