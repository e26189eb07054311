using System.ComponentModel.DataAnnotations;

namespace Registry.Probes;

/// <summary>Registry probes: the registry checking providers itself (section <c>Registry:Probes</c>).</summary>
public sealed class ProbeOptions
{
    /// <summary>
    /// Networks (<c>10.0.0.0/8</c>) or addresses probes may reach. Empty (the default): probing is
    /// off and a probe registration is a 400. Loopback, link-local and cloud-metadata addresses
    /// are refused unless a listed network lies inside their range (<c>127.0.0.0/8</c>,
    /// <c>169.254.169.254</c>), so <c>0.0.0.0/0</c> alone never opens them. Each node advertises
    /// its list and takes a share only of the probed instances whose address it admits (those
    /// named by DNS: of all, so nodes that probe should agree on what such names resolve into).
    /// </summary>
    public string[] AllowedNetworks { get; set; } = [];

    /// <summary>Longest a probe may take, in seconds; a probe's timeout is the smaller of this and its interval.</summary>
    [Range(1, 3600)]
    public int TimeoutSeconds { get; set; } = 2;

    /// <summary>The timeout, in seconds, of a probe made every <paramref name="intervalSeconds"/>.</summary>
    public int TimeoutFor(int intervalSeconds) => Math.Min(intervalSeconds, TimeoutSeconds);

    /// <summary>Consecutive failed probes after which the instance is evicted (through self-preservation's budget).</summary>
    [Range(1, 1000)]
    public int FailuresToEvict { get; set; } = 3;

    /// <summary>
    /// A node whose recent probes pass for less than this fraction ends no lease until the other
    /// nodes' marks made since show how theirs go. If one that could take its instances passes at
    /// least half of its own, it suspects itself rather than its targets: it is cut off from them
    /// (a route, a firewall, its own network), not they from everyone. For
    /// <see cref="SuspectSelfFor"/> it then counts no failure and withdraws, so that its share
    /// moves to the other nodes able to probe it at their next read of the live nodes (what only it
    /// may probe it goes on probing, ending no lease); then it takes a share again. Otherwise the
    /// instances are down and it ends their leases as they fail, a mark and a read later than it
    /// would have. Judged over the instances other nodes could probe as well, and over the shortest
    /// time in which <see cref="SuspectSelfMinInstances"/> of their probes end (at least one interval
    /// of those probed most often, at most <see cref="FailuresToEvict"/>), so a node with a smaller
    /// share does not judge. 0 turns it off.
    /// </summary>
    [Range(0.0, 1.0)]
    public double SuspectSelfBelow { get; set; } = 0.1;

    /// <summary>Fewest recent outcomes before a node judges its own probes (and advertises how many pass); a node with a smaller share does not.</summary>
    [Range(1, 1_000_000)]
    public int SuspectSelfMinInstances { get; set; } = 10;

    /// <summary>How long a node that suspected itself leaves its share of probing to the others before it takes it again.</summary>
    public TimeSpan SuspectSelfFor { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Most probes one node runs at once; the rest wait (and show as lateness).</summary>
    [Range(1, 100_000)]
    public int MaxConcurrent { get; set; } = 256;

    /// <summary>
    /// Most DNS lookups of probed names one node runs at once. On Linux a lookup blocks a thread for as long as the DNS
    /// server takes to answer (or the resolver to give up), whether or not the probe still waits for it: without a
    /// bound, names on a silent DNS server would take the node's threads. A lookup waiting for its turn past the
    /// probe's timeout fails the probe (or the registration). Registrations and probes have this many each, so that names
    /// registered on a DNS server that never answers cannot hold the turns the probes of registered instances need.
    /// </summary>
    [Range(1, 1024)]
    public int MaxConcurrentLookups { get; set; } = 16;

    /// <summary>Interval when a registration gives no <c>probeInterval</c>, in seconds.</summary>
    [Range(1, 86_400)]
    public int DefaultIntervalSeconds { get; set; } = 10;

    /// <summary>Largest <c>probeInterval</c>; larger values are clamped.</summary>
    [Range(1, 86_400)]
    public int MaxIntervalSeconds { get; set; } = 3600;

    /// <summary>Most characters in a <c>probePath</c>.</summary>
    [Range(1, 8192)]
    public int MaxPathLength { get; set; } = 1024;

    /// <summary>
    /// How often a node reads which instances are probed and recomputes which of them it owns;
    /// a new probe registration is picked up within this.
    /// </summary>
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How long a probe's HTTP connection may sit unused before it is closed. Probes of one
    /// instance reuse its connection (keep-alive, as Consul's HTTP checks do) when the next probe
    /// comes within this, which saves the connect and close that otherwise dominate a probe's
    /// cost; an instance probed less often gets a new connection each time. Default: twice the
    /// default interval. Zero turns reuse off.
    /// </summary>
    public TimeSpan ConnectionIdleTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Longest a probe's HTTP connection is reused, however busy. A pooled connection only proves
    /// the provider still answers on it, so this bounds how long a provider that stopped
    /// accepting new connections (but kept the old ones) goes on passing, and how long a DNS
    /// name that moved to another allowed address is still probed at the old one.
    /// </summary>
    public TimeSpan ConnectionLifetime { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>
    /// Most HTTP connections open to one <c>host:port</c> at once. One instance is probed one
    /// probe at a time, so more are only used when several applications register the same addr.
    /// </summary>
    [Range(1, 1000)]
    public int MaxConnectionsPerTarget { get; set; } = 2;

    /// <summary>Whether <c>https</c> probes check the provider's certificate (turn off only for self-signed fleets).</summary>
    public bool VerifyCertificates { get; set; } = true;
}
