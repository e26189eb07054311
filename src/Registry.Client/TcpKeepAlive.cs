using System.Net.Http;
using System.Net.Sockets;

namespace Registry.Client;

/// <summary>
/// Connections of the client's own <see cref="HttpClient"/> with TCP keep-alive on. A long poll is silent for up to
/// its wait; a node whose host crashed or whose network was cut sends nothing, not even a reset, and without
/// keep-alive the poll would wait out its whole timeout (the wait plus a margin) before the next node is tried, the
/// consumer hearing of no change meanwhile. With it, the kernel asks after <see cref="RegistryClientOptions.TcpKeepAlive"/>
/// of silence, then every second, and drops the connection after three unanswered probes.
/// </summary>
internal static class TcpKeepAlive
{
    private const int Probes = 3;

    /// <summary>A <see cref="SocketsHttpHandler.ConnectCallback"/> that connects as the handler would, with keep-alive on.</summary>
    public static Func<SocketsHttpConnectionContext, CancellationToken, ValueTask<Stream>> Connect(TimeSpan idle)
    {
        var seconds = (int)Math.Ceiling(idle.TotalSeconds);
        return async (context, cancellationToken) =>
        {
            // Dual mode where IPv6 is available, as the handler's own: a name resolving to either family connects.
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
                socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, seconds);
                socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 1);
                socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, Probes);
                await socket.ConnectAsync(context.DnsEndPoint, cancellationToken).ConfigureAwait(false);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        };
    }
}
