using System.Net;

namespace Registry.Probes;

/// <summary>
/// Looks up a probed host's addresses (the system resolver). Its own type so that tests can
/// make a name change its answer, as a rebinding attacker's would.
/// </summary>
internal class ProbeHostResolver
{
    public virtual Task<IPAddress[]> ResolveAsync(string host, CancellationToken cancellationToken) =>
        Dns.GetHostAddressesAsync(host, cancellationToken);
}
