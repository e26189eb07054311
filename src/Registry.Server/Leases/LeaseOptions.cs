using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;

namespace Registry.Leases;

/// <summary>Leases, renewals, the sweeper and self-preservation (section <c>Registry:Leases</c>).</summary>
public sealed class LeaseOptions
{
    /// <summary>TTL granted when a registration asks for none, in seconds.</summary>
    [Range(1, int.MaxValue)]
    public int DefaultTtlSeconds { get; set; } = 30;

    /// <summary>Smallest TTL granted; smaller requests are clamped up.</summary>
    [Range(1, int.MaxValue)]
    public int MinTtlSeconds { get; set; } = 1;

    /// <summary>Largest TTL granted; larger requests are clamped down.</summary>
    [Range(1, int.MaxValue)]
    public int MaxTtlSeconds { get; set; } = 86_400;

    /// <summary>How often a node writes the renewals it has gathered (one statement each time).</summary>
    public TimeSpan RenewalInterval { get; set; } = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// A heartbeat whose renewal has waited unrecorded (the database unreachable from this node)
    /// for this share of its TTL is refused with 503, so the provider fails over to a node that
    /// can record it before the lease runs out in the database.
    /// </summary>
    [Range(0.01, 1.0)]
    public double UnrecordedShare { get; set; } = 0.25;

    /// <summary>How often a node marks itself alive in <c>nodes</c> (the grace rule reads when the cluster last could record).</summary>
    public TimeSpan LivenessInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// When no node has marked itself alive for longer than this, the cluster could not record
    /// renewals: the leases live when that began are extended by their TTL before anything is
    /// swept. Keep it a few <see cref="LivenessInterval"/>s.
    /// </summary>
    public TimeSpan GraceGap { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>How often the sweeper looks for expired leases.</summary>
    public TimeSpan SweepInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Most instances one sweep statement deletes.</summary>
    [Range(1, 100_000)]
    public int SweepBatchSize { get; set; } = 1000;

    /// <summary>Self-preservation: the share of live instances whose eviction within <see cref="SelfPreservationWindow"/> is abnormal.</summary>
    [Range(0.0, 1.0)]
    public double SelfPreservationShare { get; set; } = 0.15;

    /// <summary>Self-preservation engages only when more than this many instances would be evicted within the window.</summary>
    [Range(0, int.MaxValue)]
    public int SelfPreservationMinInstances { get; set; } = 10;

    /// <summary>The window the share is measured over; while engaged, at most the share is evicted per window.</summary>
    public TimeSpan SelfPreservationWindow { get; set; } = TimeSpan.FromMinutes(1);
}

/// <summary>The rules of <see cref="LeaseOptions"/> that span fields; every broken one is reported, not just the first.</summary>
internal sealed class LeaseOptionsValidator : IValidateOptions<LeaseOptions>
{
    public ValidateOptionsResult Validate(string? name, LeaseOptions options)
    {
        var errors = new List<string>();
        if (!(options.MinTtlSeconds <= options.DefaultTtlSeconds && options.DefaultTtlSeconds <= options.MaxTtlSeconds))
        {
            errors.Add("Registry:Leases needs MinTtlSeconds <= DefaultTtlSeconds <= MaxTtlSeconds.");
        }

        if (!(options.RenewalInterval > TimeSpan.Zero && options.SweepInterval > TimeSpan.Zero && options.SelfPreservationWindow > TimeSpan.Zero && options.LivenessInterval > TimeSpan.Zero))
        {
            errors.Add("Registry:Leases intervals must be positive.");
        }

        // A live cluster marks every LivenessInterval: a gap shorter than two marks would grant grace to a healthy one.
        if (!(options.GraceGap >= 2 * options.LivenessInterval && options.GraceGap >= 2 * options.RenewalInterval))
        {
            errors.Add("Registry:Leases needs GraceGap of at least two LivenessIntervals and two RenewalIntervals.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
