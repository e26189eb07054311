using System.Security.Claims;

namespace Registry.Access;

/// <summary>What a credential may do to an application.</summary>
public enum Scope
{
    /// <summary>Register, heartbeat and unregister instances of the application.</summary>
    Register,

    /// <summary>Subscribe to the application and read it.</summary>
    Subscribe,

    /// <summary>Manage tokens and read everything.</summary>
    Admin,
}

/// <summary>
/// The scopes of one credential. A pattern is an exact application name, a prefix ending in
/// <c>*</c> (<c>payments.*</c>), or <c>*</c>; names compare ordinally (case-sensitive), as
/// everywhere in the API.
/// </summary>
internal sealed class Grant(string id, IReadOnlyList<string> register, IReadOnlyList<string> subscribe, bool admin, DateTimeOffset? expires = null, bool stored = false)
{
    /// <summary>The unrestricted grant of an Open node's anonymous callers.</summary>
    public static Grant Anonymous { get; } = new("anonymous", ["*"], ["*"], admin: true);

    /// <summary>The credential's public id (<c>tok_…</c>, <c>bootstrap</c>, <c>jwt:…</c>): what logs name, never a secret.</summary>
    public string Id { get; } = id;

    public IReadOnlyList<string> Register { get; } = register;

    public IReadOnlyList<string> Subscribe { get; } = subscribe;

    public bool Admin { get; } = admin;

    /// <summary>When the credential stops being accepted (a registry token's expiry; a JWT's <c>exp</c> and the clock skew allowed); never when the max value.</summary>
    public DateTimeOffset Expires { get; } = expires ?? DateTimeOffset.MaxValue;

    /// <summary>A registry token kept in the database, so one that revoking can end.</summary>
    public bool Stored { get; } = stored;

    public bool Allows(Scope scope, string application) => scope switch
    {
        Scope.Admin => Admin,
        Scope.Register => Matches(Register, application),
        Scope.Subscribe => Matches(Subscribe, application),
        _ => false,
    };

    public static bool Matches(IReadOnlyList<string> patterns, string application)
    {
        foreach (var pattern in patterns)
        {
            if (pattern.Length > 0 && pattern[^1] == '*'
                ? application.StartsWith(pattern.AsSpan(0, pattern.Length - 1), StringComparison.Ordinal)
                : string.Equals(pattern, application, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Whether <paramref name="pattern"/> is a name, a name prefix followed by <c>*</c>, or <c>*</c>. Any name the
    /// registry can be set to take (<see cref="Model.LimitsOptions.LongestApplicationLength"/>): the configured limit
    /// may be raised after a token is made, and a pattern longer than the names taken simply matches none.
    /// </summary>
    public static bool IsPattern(string pattern)
    {
        var name = pattern.EndsWith('*') ? pattern[..^1] : pattern;
        return name.Length == 0 ? pattern == "*" : name.Length <= Model.LimitsOptions.LongestApplicationLength && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');
    }
}

/// <summary>
/// The identity an authentication scheme gives a request: a credential and its grant.
/// Only a real credential carries its id as the name-identifier claim (what per-credential rate
/// limits and parking key on): an Open node's callers without one share the anonymous grant, and
/// are told apart by their address.
/// </summary>
internal sealed class CredentialIdentity(Grant grant, string authenticationType)
    : ClaimsIdentity(ReferenceEquals(grant, Grant.Anonymous) ? [] : [new Claim(ClaimTypes.NameIdentifier, grant.Id)], authenticationType, ClaimTypes.NameIdentifier, ClaimTypes.Role)
{
    public Grant Grant { get; } = grant;

    /// <summary>The grant of the request's credential, if it has one.</summary>
    public static Grant? Of(ClaimsPrincipal user)
    {
        foreach (var identity in user.Identities)
        {
            if (identity is CredentialIdentity credential)
            {
                return credential.Grant;
            }
        }

        return null;
    }

    /// <summary>The credential id for logs: <c>none</c> when the request carried no credential.</summary>
    public static string IdOf(ClaimsPrincipal user) => Of(user)?.Id ?? "none";
}
