namespace Registry.Storage;

/// <summary>One registry token: a row of <c>tokens</c>. The secret itself is never stored.</summary>
public sealed class TokenRow
{
    /// <summary>The public identifier (<c>tok_…</c>), what logs and the API name.</summary>
    public required string Id { get; set; }

    /// <summary>SHA-256 of the secret (<c>rgt_…</c>).</summary>
    public required byte[] Hash { get; set; }

    /// <summary>What the token is for, as its creator described it.</summary>
    public required string Description { get; set; }

    /// <summary>Application patterns it may register, heartbeat and unregister.</summary>
    public required string[] Register { get; set; }

    /// <summary>Application patterns it may subscribe to and read.</summary>
    public required string[] Subscribe { get; set; }

    /// <summary>Whether it may manage tokens and read everything.</summary>
    public bool Admin { get; set; }

    /// <summary>When it was created.</summary>
    public DateTime CreatedAt { get; set; }

    /// <summary>When it stops being accepted; null for never.</summary>
    public DateTime? ExpiresAt { get; set; }

    /// <summary>When a node last accepted it (written coalesced, so up to a flush interval late).</summary>
    public DateTime? LastUsedAt { get; set; }
}
