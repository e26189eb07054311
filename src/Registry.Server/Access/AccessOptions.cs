using System.ComponentModel.DataAnnotations;

namespace Registry.Access;

/// <summary>Whether every API call must carry a credential.</summary>
public enum AccessMode
{
    /// <summary>Every <c>/v1</c> call needs a bearer token with the scope for the application it names.</summary>
    Required,

    /// <summary>Calls without a credential may do anything (a private, loopback-only node).</summary>
    Open,
}

/// <summary>Authentication and authorization (section <c>Registry:Auth</c>).</summary>
public sealed class AccessOptions
{
    /// <summary>
    /// <c>Required</c> or <c>Open</c>. Unset means <c>Required</c>, except on a node that started its own
    /// embedded PostgreSQL and listens only on loopback, which runs <c>Open</c> with a warning.
    /// </summary>
    public AccessMode? Mode { get; set; }

    /// <summary>
    /// An admin credential while configured (set it from the environment, never in a file):
    /// how the first tokens are made on a node that has none. At least 32 characters; no '.'
    /// (a token with dots is taken for a JWT).
    /// </summary>
    public string? BootstrapToken { get; set; }

    /// <summary>Whether <c>/metrics</c> needs the admin scope (open by default, like Prometheus targets usually are).</summary>
    public bool ProtectMetrics { get; set; }

    /// <summary>Failed authentications (a 401, or an invalid credential sent to <c>/readyz</c>) one client address may cause per minute before it gets 429; 0 turns the limit off.</summary>
    [Range(0, 1_000_000)]
    public int MaxFailuresPerMinute { get; set; } = 30;

    /// <summary>
    /// The IPv6 network a failed authentication is counted under, as a prefix length: a host is
    /// usually given a whole /64, so counting single addresses would let it guess from 2^64 of
    /// them. IPv4 clients are counted per address.
    /// </summary>
    [Range(32, 128)]
    public int FailurePrefixLengthIpv6 { get; set; } = 64;

    /// <summary>How often a node writes when its tokens were last used (one statement for all of them).</summary>
    public TimeSpan LastUsedFlushInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How long an expired token stays (listed, refused as expired) before it is deleted: long
    /// enough to see why a client gets 401, short enough that tokens made per deploy do not pile up.
    /// </summary>
    public TimeSpan ForgetExpiredAfter { get; set; } = TimeSpan.FromDays(7);

    /// <summary>The longest description a token may be created with, in characters (Unicode code points).</summary>
    [Range(1, 4096)]
    public int MaxTokenDescriptionLength { get; set; } = 256;

    /// <summary>The most patterns a token may hold in each of <c>register</c> and <c>subscribe</c> (every node keeps them all in memory).</summary>
    [Range(1, 1024)]
    public int MaxTokenPatterns { get; set; } = 64;

    /// <summary>
    /// The most registry tokens the API creates (every node holds them all, and reloads them all at each change);
    /// beyond it creation answers 409. The <c>tokens create</c> command, the operator's own way in, is not limited.
    /// </summary>
    [Range(1, 1_000_000)]
    public int MaxTokens { get; set; } = 10_000;

    /// <summary>JWTs from an identity provider, accepted besides registry tokens when <see cref="JwtOptions.Issuer"/> is set.</summary>
    public JwtOptions Jwt { get; set; } = new();
}

/// <summary>JWT bearer credentials (section <c>Registry:Auth:Jwt</c>), e.g. Kubernetes projected service-account tokens.</summary>
public sealed class JwtOptions
{
    /// <summary>The issuer (<c>iss</c>) accepted; empty turns JWTs off.</summary>
    public string? Issuer { get; set; }

    /// <summary>The audience (<c>aud</c>) a token must name; required with <see cref="Issuer"/>.</summary>
    public string? Audience { get; set; }

    /// <summary>An https URL serving the issuer's JSON Web Key Set (refreshed every <see cref="JwksRefreshInterval"/>).</summary>
    public string? JwksUrl { get; set; }

    /// <summary>A file holding the issuer's JSON Web Key Set (read again every <see cref="JwksRefreshInterval"/>).</summary>
    public string? JwksFile { get; set; }

    /// <summary>How often the key set is fetched again; at least 5 minutes.</summary>
    public TimeSpan JwksRefreshInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>The claim naming the credential in logs (<c>jwt:&lt;value&gt;</c>).</summary>
    public string IdClaim { get; set; } = "sub";

    /// <summary>The claim holding the register patterns (a string or an array of strings).</summary>
    public string RegisterClaim { get; set; } = "registry_register";

    /// <summary>The claim holding the subscribe patterns (a string or an array of strings).</summary>
    public string SubscribeClaim { get; set; } = "registry_subscribe";

    /// <summary>The boolean claim granting the admin scope.</summary>
    public string AdminClaim { get; set; } = "registry_admin";

    /// <summary>Clock skew tolerated on <c>exp</c> and <c>nbf</c>; 0 to 1 hour.</summary>
    public TimeSpan ClockSkew { get; set; } = TimeSpan.FromSeconds(30);

    internal bool Enabled => !string.IsNullOrWhiteSpace(Issuer);
}
