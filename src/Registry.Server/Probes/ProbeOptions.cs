using System.ComponentModel.DataAnnotations;

namespace Registry.Probes;

/// <summary>Registry probes: the registry checking providers itself (section <c>Registry:Probes</c>).</summary>
public sealed class ProbeOptions
{
    /// <summary>
    /// Networks (<c>10.0.0.0/8</c>) or addresses probes may reach. Empty (the default): probing is
    /// off and a probe registration is a 400. Loopback, link-local and cloud-metadata addresses
    /// are refused unless a listed network lies inside their range (<c>127.0.0.0/8</c>,
    /// <c>169.254.169.254</c>), so <c>0.0.0.0/0</c> alone never opens them.
    /// </summary>
    public string[] AllowedNetworks { get; set; } = [];

    /// <summary>Longest a probe may take, in seconds; a probe's timeout is the smaller of this and its interval.</summary>
    [Range(1, 3600)]
    public int TimeoutSeconds { get; set; } = 2;

    /// <summary>Consecutive failed probes after which the instance is evicted (through self-preservation's budget).</summary>
    [Range(1, 1000)]
    public int FailuresToEvict { get; set; } = 3;

    /// <summary>Most probes one node runs at once; the rest wait (and show as lateness).</summary>
    [Range(1, 100_000)]
    public int MaxConcurrent { get; set; } = 256;

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

    /// <summary>Whether <c>https</c> probes check the provider's certificate (turn off only for self-signed fleets).</summary>
    public bool VerifyCertificates { get; set; } = true;
}
