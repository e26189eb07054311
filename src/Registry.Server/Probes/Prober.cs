using System.Net;
using System.Net.Sockets;

namespace Registry.Probes;

/// <summary>
/// Runs one probe. <c>tcp</c>: a connection opens. <c>http</c>/<c>https</c>: a GET whose
/// status is 2xx, read up to the headers only, redirects not followed.
/// The host is resolved and checked against the allowed networks at every probe, before any
/// connection is used, and a new connection goes only to an address that was checked
/// (<see cref="ConnectAsync"/>), so a name that changes its answer between the check and the
/// connect (DNS rebinding) gains nothing. HTTP connections are kept alive between probes of an
/// instance (<see cref="Handler"/>): a kept connection was made to an address that passed the
/// check and stays on it, and it is used only after the probe's own check of the name passed,
/// so a name that now resolves only to forbidden addresses is refused as before.
/// </summary>
internal sealed class Prober(IHttpClientFactory clients, ProbeNetworks networks)
{
    public const string ClientName = "registry-probes";

    /// <summary>Largest body drained so that its connection can serve the next probe; a larger one closes it unread.</summary>
    private const int MaxDrainedBody = 4096;

    /// <summary>The checked addresses a probe request may connect to.</summary>
    private static readonly HttpRequestOptionsKey<IPAddress[]> CheckedAddresses = new("registry.probe.addresses");

    // One client for the node's life: its handler is never rotated (see ProbeServiceExtensions).
    private readonly HttpClient _client = clients.CreateClient(ClientName);

    /// <summary>
    /// What a probe of the instance at <paramref name="addr"/> needs that does not change between
    /// probes, worked out once: its host and port, its URL, and, when the host is an IP address,
    /// whether the rules let probes reach it (they are fixed for the node's life; a name is
    /// resolved and checked at every probe).
    /// </summary>
    public ProbeEndpoint Endpoint(string addr, ProbeSpec spec)
    {
        if (addr.LastIndexOf(':') is var colon && (colon <= 0 || !int.TryParse(addr.AsSpan(colon + 1), System.Globalization.CultureInfo.InvariantCulture, out _)))
        {
            // Registration checks addr, so not expected; such a probe fails rather than stopping the scheduler.
            return new ProbeEndpoint(addr, 0, null, []);
        }

        var host = ProbeAddress.Host(addr);
        IPAddress[]? literal = null;
        if (IPAddress.TryParse(host, out var address))
        {
            literal = networks.Refusal(address) is null ? [address] : [];
        }

        Uri? url = null;
        if (spec.Kind != ProbeSpec.Tcp && !Uri.TryCreate($"{spec.Kind}://{addr}{spec.Path}", UriKind.Absolute, out url))
        {
            literal = []; // as above
        }

        return new ProbeEndpoint(host, ProbeAddress.Port(addr), url, literal);
    }

    /// <summary>Whether the instance at <paramref name="endpoint"/> passes its probe within <paramref name="timeout"/>.</summary>
    public async Task<bool> ProbeAsync(ProbeEndpoint endpoint, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            var addresses = endpoint.Literal;
            if (addresses is null)
            {
                (addresses, _) = await networks.ResolveAsync(endpoint.Host, deadline.Token);
            }

            if (addresses.Length == 0)
            {
                return false; // refused by the rules
            }

            if (endpoint.Url is null)
            {
                using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await socket.ConnectAsync(addresses, endpoint.Port, deadline.Token);
                return true;
            }

            using var request = new HttpRequestMessage(HttpMethod.Get, endpoint.Url);
            request.Options.Set(CheckedAddresses, addresses);
            // A timeout or a broken connection throws, and the handler then closes that
            // connection rather than pooling it, so a failed probe leaves no connection behind.
            using var response = await _client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline.Token);
            return (int)response.StatusCode is >= 200 and < 300;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false; // timed out
        }
        catch (Exception e) when (e is HttpRequestException or SocketException or IOException)
        {
            return false;
        }
    }

    /// <summary>
    /// The probes' handler: no redirects, no cookies, no proxy, new connections only to checked
    /// addresses, and connections kept alive between probes within the bounds of
    /// <see cref="ProbeOptions.ConnectionIdleTimeout"/>, <see cref="ProbeOptions.ConnectionLifetime"/>
    /// and <see cref="ProbeOptions.MaxConnectionsPerTarget"/>. A response body is not read by the
    /// probe; one of at most <see cref="MaxDrainedBody"/> bytes is drained so that the connection
    /// can be reused, a larger one closes the connection.
    /// </summary>
    public static SocketsHttpHandler Handler(ProbeOptions options)
    {
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            UseProxy = false,
            PooledConnectionIdleTimeout = options.ConnectionIdleTimeout,
            PooledConnectionLifetime = options.ConnectionLifetime,
            MaxConnectionsPerServer = options.MaxConnectionsPerTarget,
            // A connection attempt outlives the probe that started it (the pool keeps it for the
            // next request), so bound it by the longest probe: otherwise attempts to a target that
            // drops packets would hold the per-target slots for the system's connect timeout
            // (minutes), and its probes would go on failing after it answers again.
            ConnectTimeout = TimeSpan.FromSeconds(options.TimeoutSeconds),
            MaxResponseDrainSize = MaxDrainedBody,
            ConnectCallback = ConnectAsync,
        };
        if (!options.VerifyCertificates)
        {
#pragma warning disable CA5359 // Only when the operator turned certificate checks off for self-signed fleets.
            handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
#pragma warning restore CA5359
        }

        return handler;
    }

    private static async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        if (!context.InitialRequestMessage.Options.TryGetValue(CheckedAddresses, out var addresses))
        {
            throw new HttpRequestException("A probe connection needs checked addresses.");
        }

        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(addresses, context.DnsEndPoint.Port, cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}

/// <summary>
/// One instance's probe as <see cref="Prober.Endpoint"/> prepared it: <see cref="Url"/> null for
/// <c>tcp</c>; <see cref="Literal"/> the allowed addresses of an IP-address host (empty when the
/// rules refuse it), null for a DNS name.
/// </summary>
internal sealed record ProbeEndpoint(string Host, int Port, Uri? Url, IPAddress[]? Literal);
