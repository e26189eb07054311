using System.Net;
using Microsoft.AspNetCore.HttpOverrides;
using Microsoft.Extensions.Options;

namespace Registry.Edge;

/// <summary>What sits in front of the node (section <c>Registry:Network</c>).</summary>
public sealed class NetworkOptions
{
    /// <summary>
    /// Addresses (<c>10.0.0.5</c>) or networks (<c>10.0.0.0/8</c>) of the reverse proxies whose
    /// <c>X-Forwarded-For</c>/<c>X-Forwarded-Proto</c> the node believes; list every hop (a load
    /// balancer and the proxy behind it). Empty (the default):
    /// none, so a client cannot pose as another address to dodge per-client limits.
    /// </summary>
    public string[] TrustedProxies { get; set; } = [];

    /// <summary>
    /// Connection buffers (4 KiB blocks) kept for the next burst once returned, in MiB: answering
    /// a change to thousands of parked polls at once takes about one block per answer being
    /// written. The pool holds no more than the busiest moment needed. 0: none are kept.
    /// </summary>
    [System.ComponentModel.DataAnnotations.Range(0, 65_536)]
    public int RetainedBufferMegabytes { get; set; } = 64;

    /// <summary>
    /// An IPv6 client counts for the per-client limits (parked requests, writes) as its network of this
    /// many bits: a host is given a /64 and may send from any address in it. 128: each address alone.
    /// </summary>
    [System.ComponentModel.DataAnnotations.Range(0, 128)]
    public int ClientPrefixLengthIpv6 { get; set; } = 64;

    /// <summary>
    /// Connections one client address (an IPv6 one as its network) may hold open at once; beyond it, a new one is
    /// closed at once. The trusted proxies are not limited. A parked poll holds a connection (HTTP/1.1): keep this
    /// above <see cref="Model.LimitsOptions.MaxParkedPerClient"/> for the clients that park many, and raise it where
    /// many clients share one address (a NAT gateway). 0: no limit.
    /// </summary>
    [System.ComponentModel.DataAnnotations.Range(0, 10_000_000)]
    public int MaxConnectionsPerClient { get; set; } = 2_000;
}

/// <summary>
/// Forwarded headers honoured only from the configured proxies, so that per-client limits and
/// the rate limiter see the real client behind a load balancer, and nobody else can choose
/// the address they are counted under.
/// </summary>
internal static class Network
{
    /// <summary>
    /// What a client address counts as: an IPv4 address (or an IPv6-mapped one) as itself, an IPv6 address as its
    /// network of <paramref name="prefixLengthIpv6"/> bits (<c>2001:db8:1:2::/64</c>); <c>unknown</c> for none.
    /// </summary>
    public static string CountedAs(System.Net.IPAddress? address, int prefixLengthIpv6)
    {
        if (address is null)
        {
            return "unknown";
        }

        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (address.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6 || prefixLengthIpv6 >= 128)
        {
            return address.ToString();
        }

        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out _);
        for (var bit = prefixLengthIpv6; bit < 128; bit++)
        {
            bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
        }

        return $"{new System.Net.IPAddress(bytes)}/{prefixLengthIpv6}";
    }

    public static IServiceCollection AddRegistryNetwork(this IServiceCollection services)
    {
        services.AddOptions<NetworkOptions>().BindConfiguration("Registry:Network").ValidateDataAnnotations().ValidateOnStart();
        // Registered after Kestrel's own, so Kestrel's transport takes this one.
        services.AddSingleton<Microsoft.AspNetCore.Connections.IMemoryPoolFactory<byte>, RetainingBufferPoolFactory>();
        services.AddSingleton<IValidateOptions<NetworkOptions>, NetworkOptionsValidator>();
        services.AddSingleton<Clients>();
        services.AddSingleton<ClientConnections>();
        services.AddOptions<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions>().Configure<ClientConnections, IOptions<NetworkOptions>>(
            (kestrel, connections, network) =>
            {
                if (network.Value.MaxConnectionsPerClient > 0)
                {
                    kestrel.ConfigureEndpointDefaults(listen => listen.Use(connections.Limit));
                }
            });
        services.AddOptions<ForwardedHeadersOptions>().Configure<IOptions<NetworkOptions>>((forwarded, network) =>
        {
            // With no proxy listed the framework would believe anyone: then no header at all.
            forwarded.ForwardedHeaders = network.Value.TrustedProxies.Length == 0
                ? ForwardedHeaders.None
                : ForwardedHeaders.XForwardedFor | ForwardedHeaders.XForwardedProto;
            // Walk back through every trusted hop (a load balancer in front of nginx is two), not
            // the framework's default of one, which would count every client as the inner proxy's
            // peer. It stops at the first address that is not a trusted proxy, so a client cannot
            // choose its address by writing more entries.
            forwarded.ForwardLimit = null;
            // The framework trusts loopback by default; here only what is configured.
            forwarded.KnownProxies.Clear();
            forwarded.KnownIPNetworks.Clear();
            foreach (var entry in network.Value.TrustedProxies)
            {
                forwarded.KnownIPNetworks.Add(Parse(entry));
            }
        });
        return services;
    }

    /// <summary>An address is a network of one.</summary>
    internal static System.Net.IPNetwork Parse(string entry) =>
        entry.Contains('/', StringComparison.Ordinal)
            ? System.Net.IPNetwork.Parse(entry)
            : new System.Net.IPNetwork(IPAddress.Parse(entry), IPAddress.Parse(entry).AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);

    /// <summary>Whether <paramref name="entry"/> is an IP address or a network in CIDR notation.</summary>
    internal static bool IsAddressOrNetwork(string entry) =>
        entry.Contains('/', StringComparison.Ordinal) ? System.Net.IPNetwork.TryParse(entry, out _) : IPAddress.TryParse(entry, out _);

    private sealed class NetworkOptionsValidator : IValidateOptions<NetworkOptions>
    {
        public ValidateOptionsResult Validate(string? name, NetworkOptions options)
        {
            var errors = options.TrustedProxies
                .Where(entry => !IsAddressOrNetwork(entry))
                .Select(entry => $"Registry:Network:TrustedProxies: '{entry}' is neither an IP address nor a network in CIDR notation.")
                .ToList();
            return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
        }
    }
}
