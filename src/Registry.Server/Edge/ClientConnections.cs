using System.Collections.Concurrent;
using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Options;
using Registry.Telemetry;

namespace Registry.Edge;

/// <summary>
/// How many connections one client address may hold open at once (<see cref="NetworkOptions.MaxConnectionsPerClient"/>),
/// as Consul's <c>http_max_conns_per_client</c>: Kestrel's own limit is the node's, so without this one client
/// opening connections and sending nothing (each lives until <c>Kestrel:Limits:RequestHeadersTimeout</c>) could
/// hold all of them, and every other client would be turned away. A connection beyond the limit is closed before
/// a byte is read, as Kestrel closes one beyond its own. The address is the peer's (an IPv6 one as its network,
/// as for the other per-client limits), since no header has been read yet; the trusted proxies, through which
/// many clients come, are not limited.
/// </summary>
internal sealed partial class ClientConnections(IOptions<NetworkOptions> options, RegistryMetrics metrics, TimeProvider time, ILogger<ClientConnections> logger)
{
    private static readonly TimeSpan WarningInterval = TimeSpan.FromMinutes(1);

    private readonly int _limit = options.Value.MaxConnectionsPerClient;
    private readonly int _prefixLengthIpv6 = options.Value.ClientPrefixLengthIpv6;
    private readonly IPNetwork[] _proxies = [.. options.Value.TrustedProxies.Select(Network.Parse)];
    private readonly ConcurrentDictionary<string, int> _open = new(StringComparer.Ordinal);

    /// <summary>When (timestamp ticks) a refusal was last logged; refusals come in floods, so one line a minute.</summary>
    private long _warnedAt = -1;

    /// <summary>The connection middleware: counts the connection for its client while it is open, or closes it.</summary>
    public ConnectionDelegate Limit(ConnectionDelegate next) => async connection =>
    {
        if (connection.RemoteEndPoint is not IPEndPoint remote || IsProxy(remote.Address))
        {
            await next(connection);
            return;
        }

        var client = Network.CountedAs(remote.Address, _prefixLengthIpv6);
        if (!TryOpen(client))
        {
            metrics.LimitReached("connections_per_client");
            Warn(client);
            return; // Kestrel closes a connection whose middleware returns.
        }

        try
        {
            await next(connection);
        }
        finally
        {
            Close(client);
        }
    };

    private bool IsProxy(IPAddress address)
    {
        if (_proxies.Length == 0)
        {
            return false;
        }

        var mapped = address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
        return _proxies.Any(proxy => proxy.Contains(mapped));
    }

    private bool TryOpen(string client)
    {
        while (true)
        {
            if (_open.TryGetValue(client, out var open))
            {
                if (open >= _limit)
                {
                    return false;
                }

                if (_open.TryUpdate(client, open + 1, open))
                {
                    return true;
                }
            }
            else if (_open.TryAdd(client, 1))
            {
                return true;
            }
        }
    }

    private void Close(string client)
    {
        while (true)
        {
            var open = _open[client];
            // The last one takes the entry away, unless another connection counted itself meanwhile.
            if (open == 1 ? _open.TryRemove(KeyValuePair.Create(client, 1)) : _open.TryUpdate(client, open - 1, open))
            {
                return;
            }
        }
    }

    private void Warn(string client)
    {
        var now = time.GetTimestamp();
        var last = Interlocked.Read(ref _warnedAt);
        if ((last < 0 || time.GetElapsedTime(last, now) >= WarningInterval) && Interlocked.CompareExchange(ref _warnedAt, now, last) == last)
        {
            LogRefused(logger, client, _limit);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Edge: {Client} holds {Limit} open connections (Registry:Network:MaxConnectionsPerClient); its further connections are closed at once. Logged at most once a minute; registry.limits.rejections counts them (limit connections_per_client)")]
    private static partial void LogRefused(ILogger logger, string client, int limit);
}
