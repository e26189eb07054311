using System.Net;
using System.Net.Sockets;

namespace Registry.Probes;

/// <summary>
/// Runs one probe. <c>tcp</c>: a connection opens. <c>http</c>/<c>https</c>: a GET whose
/// status is 2xx, read up to the headers only (a body is never read), redirects not followed.
/// The host is resolved and checked against the allowed networks at every probe, and the
/// connection goes only to an address that was checked (<see cref="ConnectAsync"/>), so a
/// name that changes its answer between the check and the connect (DNS rebinding) gains nothing.
/// </summary>
internal sealed class Prober(IHttpClientFactory clients, ProbeNetworks networks, Membership.NodeIdentity node)
{
    public const string ClientName = "registry-probes";

    /// <summary>The checked addresses a probe request may connect to.</summary>
    private static readonly HttpRequestOptionsKey<IPAddress[]> CheckedAddresses = new("registry.probe.addresses");

    /// <summary>Whether the instance at <paramref name="addr"/> passes its probe within <paramref name="timeout"/>.</summary>
    public async Task<bool> ProbeAsync(string addr, ProbeSpec spec, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            var (addresses, refusal) = await networks.ResolveAsync(ProbeAddress.Host(addr), deadline.Token);
            if (refusal is not null)
            {
                return false;
            }

            if (spec.Kind == ProbeSpec.Tcp)
            {
                using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
                await socket.ConnectAsync(addresses, ProbeAddress.Port(addr), deadline.Token);
                return true;
            }

            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri($"{spec.Kind}://{addr}{spec.Path}"));
            request.Options.Set(CheckedAddresses, addresses);
            request.Headers.UserAgent.ParseAdd($"registry-probe/1 (node {node.Id})");
            using var response = await clients.CreateClient(ClientName).SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline.Token);
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

    /// <summary>The probes' handler: no redirects, no cookies, no proxy, a new connection per probe, only to checked addresses.</summary>
    public static SocketsHttpHandler Handler(bool verifyCertificates)
    {
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            UseProxy = false,
            // Each probe opens its own connection: a probe that reuses one proves little, and a
            // pooled connection would outlive the address check it was made under.
            PooledConnectionLifetime = TimeSpan.Zero,
            ConnectCallback = ConnectAsync,
        };
        if (!verifyCertificates)
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
