namespace Registry.Membership;

/// <summary>
/// The shared work this node can take a part of, as it advertises it in its row of
/// <c>nodes</c> with every mark: work that one node must do for an item goes only to the live
/// nodes able to do it, so a node that cannot (its configuration differs, or lags a rolling
/// change, or it is cut off from the items) takes no share it would fail at. Filled in by each
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
/// How a node's probes are going: the fraction of the instances it probes whose last probe
/// passed (null until it knows enough outcomes to say), and whether it has withdrawn from probing
/// because nearly all of its own failed while another node's passed.
/// </summary>
internal sealed record ProbeStanding(double? Passing, bool Withdrawn)
{
    public static readonly ProbeStanding Unknown = new(null, false);
}
