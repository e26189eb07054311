using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Options;
using Registry.Edge;

namespace Registry.Probes;

/// <summary>
/// Where probes may go (the SSRF rules). A registry that probes on request would otherwise be
/// a proxy into whatever network it sits in: its own loopback services, the cloud metadata
/// endpoint that hands out credentials, link-local neighbours. So an address must lie in
/// <see cref="ProbeOptions.AllowedNetworks"/>, and one in a sensitive range only when a listed
/// network lies inside that range. A DNS name is resolved at registration and again at every
/// probe (its answer may change), and only the addresses it gives that pass are used.
/// </summary>
internal sealed class ProbeNetworks(IOptions<ProbeOptions> options, ProbeHostResolver resolver) : IDisposable
{
    /// <summary>Ranges refused unless listed explicitly, innermost last (a metadata address is also link-local).</summary>
    private static readonly (string Name, IPNetwork Range)[] Sensitive =
    [
        ("unspecified", IPNetwork.Parse("0.0.0.0/8")),
        ("unspecified", IPNetwork.Parse("::/128")),
        ("loopback", IPNetwork.Parse("127.0.0.0/8")),
        ("loopback", IPNetwork.Parse("::1/128")),
        ("link-local", IPNetwork.Parse("169.254.0.0/16")),
        ("link-local", IPNetwork.Parse("fe80::/10")),
        ("cloud metadata", IPNetwork.Parse("169.254.169.254/32")),
        ("cloud metadata", IPNetwork.Parse("169.254.170.2/32")),
        ("cloud metadata", IPNetwork.Parse("169.254.170.23/32")),
        ("cloud metadata", IPNetwork.Parse("100.100.100.200/32")),
        ("cloud metadata", IPNetwork.Parse("168.63.129.16/32")),
        ("cloud metadata", IPNetwork.Parse("fd00:ec2::254/128")),
        ("cloud metadata", IPNetwork.Parse("fd00:ec2::23/128")),
        ("cloud metadata", IPNetwork.Parse("fd20:ce::254/128")),
    ];

    /// <summary>NAT64's well-known prefix: its last 32 bits are the IPv4 address reached.</summary>
    private static readonly IPNetwork Nat64 = IPNetwork.Parse("64:ff9b::/96");

    /// <summary>6to4: bits 16 to 47 are the IPv4 address of the relay reached.</summary>
    private static readonly IPNetwork SixToFour = IPNetwork.Parse("2002::/16");

    /// <summary>The deprecated IPv4-compatible form (<c>::a.b.c.d</c>).</summary>
    private static readonly IPNetwork Ipv4Compatible = IPNetwork.Parse("::/96");

    private readonly IPNetwork[] _allowed = [.. options.Value.AllowedNetworks.Select(Network.Parse)];

    /// <summary>Turns at a lookup: taken before it starts, given back when it ends, not when its caller stops waiting.</summary>
    private readonly SemaphoreSlim _lookups = new(options.Value.MaxConcurrentLookups);

    /// <summary>
    /// The registrations' own turns: names registered on a DNS server that never answers (by one client, or a zone
    /// gone dark) hold these, never the turns the probes of the instances already registered need.
    /// </summary>
    private readonly SemaphoreSlim _registrationLookups = new(options.Value.MaxConcurrentLookups);

    /// <summary>Whether probing is on at all.</summary>
    public bool Enabled => _allowed.Length > 0;

    /// <summary>
    /// The allowed networks as this node advertises them in <c>nodes</c> (null when probing is
    /// off), so that probed instances are shared only among the nodes that may reach them.
    /// </summary>
    public string[]? Advertised => Enabled ? [.. _allowed.Select(n => n.ToString())] : null;

    /// <summary>Null when a probe may reach <paramref name="address"/>; otherwise the rule it breaks, as a sentence.</summary>
    public string? Refusal(IPAddress address) => Refusal(address, _allowed);

    /// <summary>
    /// Another node's networks as it advertised them (<see cref="Advertised"/>); an entry this
    /// node cannot read (a row written by hand) is left out, which only narrows what it is given.
    /// </summary>
    public static IPNetwork[] Parse(IEnumerable<string> advertised) =>
        [.. advertised.Where(Network.IsAddressOrNetwork).Select(Network.Parse)];

    /// <summary>Whether a node whose allowed networks are <paramref name="allowed"/> may probe <paramref name="address"/>: the same rules, its list.</summary>
    public static bool Admits(IPAddress address, IPNetwork[] allowed) => Refusal(address, allowed) is null;

    private static string? Refusal(IPAddress address, IPNetwork[] allowed)
    {
        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        // Where the network translates, an IPv4 address carried inside an IPv6 one is the host reached: it is held to
        // the same sensitive ranges (the IPv6 address itself must still lie in an allowed network).
        var refusal = SensitiveRefusal(address, allowed) ?? (Embedded(address) is { } carried && SensitiveRefusal(carried, allowed) is { } inner
            ? $"{address} carries {inner}"
            : null);
        return refusal ?? (allowed.Any(n => n.Contains(address))
            ? null
            : $"{address} is outside Registry:Probes:AllowedNetworks ({string.Join(", ", allowed)})");
    }

    private static string? SensitiveRefusal(IPAddress address, IPNetwork[] allowed)
    {
        foreach (var (name, range) in Sensitive)
        {
            if (range.Contains(address) && !allowed.Any(n => n.Contains(address) && n.PrefixLength >= range.PrefixLength && range.Contains(n.BaseAddress)))
            {
                return $"{address} is in the {name} range {range}, which probes may reach only when Registry:Probes:AllowedNetworks lists it explicitly";
            }
        }

        return null;
    }

    /// <summary>The IPv4 address an IPv6 address of NAT64, 6to4 or the IPv4-compatible form carries; null for any other.</summary>
    private static IPAddress? Embedded(IPAddress address)
    {
        if (address.AddressFamily != AddressFamily.InterNetworkV6)
        {
            return null;
        }

        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        return Nat64.Contains(address) || Ipv4Compatible.Contains(address) ? new IPAddress(bytes[12..])
            : SixToFour.Contains(address) ? new IPAddress(bytes[2..6])
            : null;
    }

    /// <summary>
    /// The addresses of <paramref name="host"/> that a probe may connect to; when none may, the
    /// refusal names the rule the first one breaks.
    /// </summary>
    public async Task<(IPAddress[] Addresses, string? Refusal)> ResolveAsync(string host, CancellationToken cancellationToken, bool registering = false)
    {
        var turns = registering ? _registrationLookups : _lookups;
        IPAddress[] addresses;
        if (IPAddress.TryParse(host.Trim('[', ']'), out var literal))
        {
            addresses = [literal];
        }
        else
        {
            try
            {
                // Waited for only as long as the caller may: a blocking getaddrinfo underneath need not stop when asked,
                // and holds its turn (and its thread) until it ends.
                await turns.WaitAsync(cancellationToken);
                Task<IPAddress[]> lookup;
                try
                {
                    lookup = resolver.ResolveAsync(host, cancellationToken);
                }
                catch
                {
                    turns.Release();
                    throw;
                }

                _ = lookup.ContinueWith(
                    static (ended, turns) =>
                    {
                        _ = ended.Exception; // observed, also when nobody waits for it any more
                        ((SemaphoreSlim)turns!).Release();
                    },
                    turns, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                addresses = await lookup.WaitAsync(cancellationToken);
            }
            catch (SocketException e)
            {
                return ([], $"{host} does not resolve ({e.SocketErrorCode})");
            }

            if (addresses.Length == 0)
            {
                return ([], $"{host} resolves to no address");
            }
        }

        // Only the addresses that pass are ever connected to, so a name that also resolves to a
        // forbidden one (dual-stack localhost, or a rebinding attempt) gains nothing by it.
        var allowed = addresses.Where(a => Refusal(a) is null).ToArray();
        return allowed.Length > 0
            ? (allowed, null)
            : ([], literal is not null ? Refusal(literal) : $"{host} resolves to {Refusal(addresses[0])}");
    }

    public void Dispose() => _lookups.Dispose();
}
