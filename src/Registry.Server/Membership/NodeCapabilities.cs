namespace Registry.Membership;

/// <summary>
/// The shared work this node can take a part of, as it advertises it in its row of
/// <c>nodes</c> with every mark: work that one node must do for an item goes only to the live
/// nodes able to do it, so a node that cannot (its configuration differs, or lags a rolling
/// change) takes no share it would fail at. Filled in by each capability's own wiring.
/// </summary>
internal sealed class NodeCapabilities(string[]? probeNetworks)
{
    /// <summary>The networks this node's probes may reach; null when it does not probe.</summary>
    public string[]? ProbeNetworks { get; } = probeNetworks;
}
