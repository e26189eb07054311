using System.Security.Cryptography;

namespace Registry.Membership;

/// <summary>
/// Who this node is in the cluster: a random id taken at start (a restarted node is a new
/// member), which names its row in <c>nodes</c> and tags its own notifications.
/// </summary>
internal sealed class NodeIdentity
{
    /// <summary>12 lowercase hex characters: no spaces or line breaks, so it fits in a notification's first line.</summary>
    public string Id { get; } = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
}
