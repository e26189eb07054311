using Registry.Access;
using Registry.ChangeFeed;
using Registry.Drain;
using Registry.Edge;
using Registry.Leases;
using Registry.Membership;
using Registry.Model;
using Registry.Probes;
using Registry.Registration;
using Registry.Storage;
using Registry.Subscription;

namespace Registry;

/// <summary>
/// The shape of the <c>Registry</c> configuration section: one property per subsystem, whose
/// options class lives in that subsystem's folder. A section is bound by its property's name
/// (see <see cref="RegistryServiceExtensions"/>), so adding one is a class beside its subsystem
/// and a line here.
/// </summary>
public sealed class RegistryOptions
{
    /// <summary>The root section's name.</summary>
    public const string SectionName = "Registry";

    /// <summary>The database connection and the private cluster (<c>Registry:Database</c>).</summary>
    public DatabaseOptions Database { get; set; } = new();

    /// <summary>Input limits (<c>Registry:Limits</c>).</summary>
    public LimitsOptions Limits { get; set; } = new();

    /// <summary>Leases, renewals, the sweeper and self-preservation (<c>Registry:Leases</c>).</summary>
    public LeaseOptions Leases { get; set; } = new();

    /// <summary>Long polling (<c>Registry:Subscriptions</c>).</summary>
    public SubscriptionOptions Subscriptions { get; set; } = new();

    /// <summary>The group-committed write path (<c>Registry:Writes</c>).</summary>
    public WriteOptions Writes { get; set; } = new();

    /// <summary>The LISTEN connection and the in-memory registry (<c>Registry:ChangeFeed</c>).</summary>
    public ChangeFeedOptions ChangeFeed { get; set; } = new();

    /// <summary>Per-client rate limiting (<c>Registry:RateLimit</c>).</summary>
    public RateLimitOptions RateLimit { get; set; } = new();

    /// <summary>What sits in front of the node (<c>Registry:Network</c>).</summary>
    public NetworkOptions Network { get; set; } = new();

    /// <summary>Credentials and what they may do (<c>Registry:Auth</c>).</summary>
    public AccessOptions Auth { get; set; } = new();

    /// <summary>How a node presents itself to the cluster (<c>Registry:Membership</c>).</summary>
    public MembershipOptions Membership { get; set; } = new();

    /// <summary>Registry probes of providers (<c>Registry:Probes</c>).</summary>
    public ProbeOptions Probes { get; set; } = new();

    /// <summary>Registrations held by a connection (<c>Registry:Sessions</c>).</summary>
    public Sessions.SessionOptions Sessions { get; set; } = new();

    /// <summary>Confirmed drain and the watchers view (<c>Registry:Drain</c>).</summary>
    public DrainOptions Drain { get; set; } = new();

    /// <summary>The configuration path of the section bound to <paramref name="property"/> (pass it with <c>nameof</c>).</summary>
    public static string Section(string property) => $"{SectionName}:{property}";
}
