using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Options;

namespace Registry.Membership;

/// <summary>
/// The URL this node advertises in <c>nodes</c>: configured, or derived from where the server
/// listens. The server binds after the hosted services start, so until it does this is null
/// and the node's first marks carry no URL. Only a started server's addresses are taken: before
/// it binds, the host fills them from the <c>Urls</c> setting, which Kestrel's own endpoints (or a
/// port 0) then replace, and a mark in between would advertise the wrong address for good.
/// </summary>
internal sealed class AdvertisedUrl(IOptions<MembershipOptions> options, IServer server, IHostApplicationLifetime lifetime)
{
    private string? _derived;

    public string? Value
    {
        get
        {
            if (!string.IsNullOrWhiteSpace(options.Value.AdvertisedUrl))
            {
                return options.Value.AdvertisedUrl.TrimEnd('/');
            }

            if (!lifetime.ApplicationStarted.IsCancellationRequested)
            {
                return null;
            }

            return _derived ??= server.Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault() is { } address
                ? Reachable(address, Dns.GetHostName())
                : null;
        }
    }

    /// <summary>
    /// A listening address as others can use it: a wildcard host (every interface) is no
    /// address to connect to, so the machine's host name stands in for it.
    /// </summary>
    internal static string Reachable(string listening, string hostName)
    {
        var schemeEnd = listening.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd < 0)
        {
            return listening.TrimEnd('/');
        }

        var hostStart = schemeEnd + 3;
        var rest = listening[hostStart..];
        var host = rest.StartsWith('[') ? rest[..(rest.IndexOf(']', StringComparison.Ordinal) + 1)] : rest.Split(':', '/')[0];
        var wildcard = host is "0.0.0.0" or "[::]" or "*" or "+" or "[::0]";
        var url = wildcard ? listening[..hostStart] + hostName + rest[host.Length..] : listening;
        return url.TrimEnd('/');
    }
}
