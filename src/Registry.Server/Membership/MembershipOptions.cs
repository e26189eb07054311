using System.ComponentModel.DataAnnotations;

namespace Registry.Membership;

/// <summary>How a node presents itself to the cluster and when others count it live (section <c>Registry:Membership</c>).</summary>
public sealed class MembershipOptions
{
    /// <summary>
    /// The base URL other nodes and operators reach this node at (<c>http://registry-2:5080</c>).
    /// Empty (the default): the first address the server listens on, with a wildcard host
    /// (<c>0.0.0.0</c>, <c>[::]</c>, <c>*</c>, <c>+</c>) replaced by the machine's host name.
    /// </summary>
    public string AdvertisedUrl { get; set; } = "";

    /// <summary>
    /// A node whose last mark in <c>nodes</c> is older than this is not live: its probes move to
    /// the others. Keep it a few <c>Registry:Leases:LivenessInterval</c>s.
    /// </summary>
    public TimeSpan NodeTimeout { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>
    /// How often a node reads the live nodes again (one small query); keep it at most the liveness interval. Joining
    /// and orderly leaving are announced and read at once; this is how soon a node that died is noticed.
    /// </summary>
    public TimeSpan RefreshInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Rows of nodes not seen for this long are deleted by the sweeper; kept longer when a lease of
    /// <c>Registry:Leases:MaxTtlSeconds</c> may still be held back for them (about 1.25 of it and a few seconds).
    /// </summary>
    public TimeSpan ForgetAfter { get; set; } = TimeSpan.FromDays(1);
}
