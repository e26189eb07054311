namespace Registry.Storage;

/// <summary>
/// One registry node as the cluster knows it: a row of <c>nodes</c>. Each node refreshes its
/// own <see cref="LastSeenAt"/> while it can reach the database, so the newest of them says
/// when the cluster last could record lease renewals (the grace rule is decided from it).
/// </summary>
public sealed class NodeRow
{
    /// <summary>A random id the node takes at start.</summary>
    public required string Id { get; set; }

    /// <summary>When the node started, on the database clock.</summary>
    public DateTime StartedAt { get; set; }

    /// <summary>When the node last reached the database, on the database clock.</summary>
    public DateTime LastSeenAt { get; set; }

    /// <summary>
    /// Every lease renewal the node promised before this time is written (the start of the flush that wrote them, on
    /// the database clock); the sweepers hold back the leases that ran out after it. Later than a mark's own time by
    /// nothing but a flush's duration, and kept apart from <see cref="LastSeenAt"/> (liveness, membership and the
    /// grace rule), which a slow flush must not age. Null until the node's first flush marks.
    /// </summary>
    public DateTime? VouchedAt { get; set; }

    /// <summary>The base URL other nodes and operators reach it at (null until it knows where it listens).</summary>
    public string? Url { get; set; }

    /// <summary>
    /// The networks the node's probes may reach (its <c>Registry:Probes:AllowedNetworks</c>,
    /// normalised); null when it does not probe. Probed instances are shared only among the live
    /// nodes whose networks admit them.
    /// </summary>
    public string[]? ProbeNetworks { get; set; }

    /// <summary>
    /// The fraction of the node's recent probes that passed, over instances another node could
    /// probe as well; null until it knows enough outcomes. A node whose own probes nearly all fail
    /// while another's pass suspects itself, not its targets.
    /// </summary>
    public float? ProbesPassing { get; set; }

    /// <summary>
    /// The node suspects itself cut off from the instances it probes: its share goes to the other
    /// nodes able to probe them (it keeps, but ends no lease of, those only it may probe).
    /// </summary>
    public bool ProbesWithdrawn { get; set; }

    /// <summary>
    /// When the node stopped in an orderly way: it is no longer live, though its
    /// <see cref="LastSeenAt"/> stays evidence for the grace rule.
    /// </summary>
    public DateTime? LeftAt { get; set; }
}

/// <summary>
/// A sweep's evictions: a row of <c>evictions</c>. Self-preservation's budget is counted over
/// these, so it holds for the whole cluster, whichever node sweeps.
/// </summary>
public sealed class EvictionRow
{
    /// <summary>Generated.</summary>
    public long Id { get; set; }

    /// <summary>When the sweep committed, on the database clock.</summary>
    public DateTime EvictedAt { get; set; }

    /// <summary>How many instances it evicted.</summary>
    public int Instances { get; set; }
}
