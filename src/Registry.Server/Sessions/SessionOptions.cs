using System.ComponentModel.DataAnnotations;

namespace Registry.Sessions;

/// <summary>Sessions: registrations held open as one connection (section <c>Registry:Sessions</c>).</summary>
public sealed class SessionOptions
{
    /// <summary>Seconds between the keep-alive comments a session's stream carries (default 5).</summary>
    [Range(1, 3_600)]
    public int KeepAliveSeconds { get; set; } = 5;

    /// <summary>
    /// The lease of a session without <c>ttl</c>, in seconds (default 15, clamped to the lease
    /// bounds): how long the instance outlives the node that holds its session, should that
    /// node die.
    /// </summary>
    [Range(1, 86_400)]
    public int DefaultTtlSeconds { get; set; } = 15;
}
