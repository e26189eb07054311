using Microsoft.Extensions.Options;

namespace Registry.Edge;

/// <summary>
/// Who a request counts as for the per-client limits (parked requests, writes): its remote
/// address, after forwarded headers from the configured trusted proxies and with an IPv6
/// address taken as its network (<see cref="NetworkOptions.ClientPrefixLengthIpv6"/>), together
/// with the id of its credential when it has one — so a fleet sharing one token from many
/// hosts is many clients.
/// </summary>
internal sealed class Clients(IOptions<NetworkOptions> network)
{
    private readonly int _prefixLengthIpv6 = network.Value.ClientPrefixLengthIpv6;

    /// <summary>The client <paramref name="http"/> comes from.</summary>
    public string Of(HttpContext http) =>
        $"{Network.CountedAs(http.Connection.RemoteIpAddress, _prefixLengthIpv6)}" +
        $"|{http.User.FindFirst(System.Security.Claims.ClaimTypes.NameIdentifier)?.Value}";
}
