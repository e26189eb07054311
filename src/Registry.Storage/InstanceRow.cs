namespace Registry.Storage;

/// <summary>One registered provider instance: a row of <c>instances</c>.</summary>
public sealed class InstanceRow
{
    /// <summary>The application the instance belongs to (part of the key).</summary>
    public required string Application { get; set; }

    /// <summary>The protocol it serves (part of the key).</summary>
    public required string Protocol { get; set; }

    /// <summary>Its <c>host:port</c> (part of the key).</summary>
    public required string Addr { get; set; }

    /// <summary>The instance's metadata as a JSON object of strings.</summary>
    public required string Meta { get; set; }

    /// <summary>The lease granted at registration, in seconds.</summary>
    public int TtlSeconds { get; set; }

    /// <summary>When the lease runs out, on the database clock.</summary>
    public DateTime ExpiresAt { get; set; }

    /// <summary>When the instance was first registered.</summary>
    public DateTime RegisteredAt { get; set; }

    /// <summary>
    /// Taken from a sequence whenever what a consumer sees of the row (or its TTL) changes, and
    /// whenever a session takes the row or a registration takes it from a session (so each
    /// holder is told apart), so that a node can compare the (key, revision) pairs of an application with what it
    /// holds in memory and catch a lost notification. Values are drawn at statement time and
    /// commit in any order: never compare a count and a maximum of them.
    /// </summary>
    public long Revision { get; set; }

    /// <summary>
    /// Whether a session holds the registration: any registration that comes after it, even with
    /// the same meta, then takes a fresh revision, which tells the session it was replaced.
    /// </summary>
    public bool SessionHeld { get; set; }

    /// <summary>How the registry probes the instance itself (<c>http</c>, <c>https</c>, <c>tcp</c>); null when it does not.</summary>
    public string? ProbeKind { get; set; }

    /// <summary>The path an <c>http</c>/<c>https</c> probe requests.</summary>
    public string? ProbePath { get; set; }

    /// <summary>Seconds between probes.</summary>
    public int? ProbeIntervalSeconds { get; set; }

    /// <summary>
    /// The id of the registry token that asked for the probe: once it is revoked or has expired, the instance is no
    /// longer probed and its lease ends (only a valid credential keeps an instance registered). Null for credentials
    /// that cannot be revoked (the bootstrap token, a JWT, an Open node's callers).
    /// </summary>
    public string? ProbeCredential { get; set; }
}
