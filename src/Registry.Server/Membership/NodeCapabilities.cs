namespace Registry.Membership;

/// <summary>
/// The shared work this node can take a part of, as it advertises it in its row of
/// <c>nodes</c> with every mark: work that one node must do for an item goes only to the live
/// nodes able to do it, so a node that cannot (its configuration differs, or lags a rolling
/// change) takes no share it would fail at, and one that suspects itself of failing at it (cut
/// off from the items) gives its share to the others while they can take it. Filled in by each
/// capability's own wiring and kept up to date by the work itself.
/// </summary>
internal sealed class NodeCapabilities(string[]? probeNetworks)
{
    private volatile ProbeStanding _probes = ProbeStanding.Unknown;

    /// <summary>The networks this node's probes may reach by its configuration; null when it does not probe.</summary>
    public string[]? ProbeNetworks { get; } = probeNetworks;

    /// <summary>How this node's probes are going, as the probes last judged it.</summary>
    public ProbeStanding Probes
    {
        get => _probes;
        set => _probes = value;
    }
}

/// <summary>
/// How a node's probes are going: the fraction of its recent probes that passed, over the
/// instances another node could probe as well (null until it knows enough outcomes to say), and
/// whether it has withdrawn from probing because nearly all of its own failed while another
/// node's passed.
/// </summary>
internal sealed record ProbeStanding(double? Passing, bool Withdrawn)
{
    public static readonly ProbeStanding Unknown = new(null, false);
}
