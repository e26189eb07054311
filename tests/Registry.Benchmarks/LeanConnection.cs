using System.Buffers.Text;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

namespace Registry.Benchmarks;

/// <summary>
/// One keep-alive HTTP/1.1 connection that sends prepared requests and reads just the status,
/// for the registration and heartbeat load loops. HttpClient costs this generator about 25 µs
/// of CPU a request; on a machine it shares with the node and PostgreSQL that CPU is taken from
/// what is being measured, so the hot loops send bytes the way pgbench or wrk would.
/// </summary>
internal sealed class LeanConnection : IDisposable
{
    private static readonly byte[] HeaderEnd = "\r\n\r\n"u8.ToArray();
    private static readonly byte[] LineEnd = "\r\n"u8.ToArray();

    // Looked for in the lower-cased head.
    private const string ContentLength = "\r\ncontent-length:";
    private const string Chunked = "\r\ntransfer-encoding: chunked";
    private const string Close = "\r\nconnection: close";

    private readonly Uri _server;
    private Socket? _socket;
    private byte[] _buffer = new byte[8192];
    private int _start; // first unread byte
    private int _end; // one past the last received byte

    public LeanConnection(Uri server) => _server = server;

    /// <summary>A POST of a JSON body to <paramref name="pathAndQuery"/>, as bytes ready to send (with a bearer token when given).</summary>
    public static byte[] Post(Uri server, string pathAndQuery, byte[] body, string? token = null) =>
        Request("POST", server, pathAndQuery, "application/json", body, token);

    /// <summary>Any request with a body, as bytes ready to send (etcd's v2 API takes form-encoded PUTs).</summary>
    public static byte[] Request(string method, Uri server, string pathAndQuery, string contentType, byte[] body, string? token = null)
    {
        var authorization = token is null ? "" : $"Authorization: Bearer {token}\r\n";
        var head = Encoding.ASCII.GetBytes(string.Create(
            CultureInfo.InvariantCulture,
            $"{method} {pathAndQuery} HTTP/1.1\r\nHost: {server.Authority}\r\n{authorization}Content-Type: {contentType}\r\nContent-Length: {body.Length}\r\n\r\n"));
        return [.. head, .. body];
    }

    /// <summary>Sends one prepared request and returns the response's status code once its body has been read.</summary>
    public async Task<int> SendAsync(byte[] request, CancellationToken cancellationToken)
    {
        var socket = _socket ??= await ConnectAsync(cancellationToken);
        await socket.SendAsync(request, SocketFlags.None, cancellationToken);

        var headerEnd = await ReceiveUntilAsync(HeaderEnd, cancellationToken);
        var head = _buffer.AsSpan(_start, headerEnd - _start);
        var status = int.Parse(head.Slice(9, 3), NumberStyles.None, CultureInfo.InvariantCulture);
        var lower = Encoding.ASCII.GetString(head).ToLowerInvariant();
        var close = lower.Contains(Close, StringComparison.Ordinal);
        var chunked = lower.Contains(Chunked, StringComparison.Ordinal);
        var length = 0;
        var at = lower.IndexOf(ContentLength, StringComparison.Ordinal);
        if (at >= 0)
        {
            var value = lower.AsSpan(at + ContentLength.Length).TrimStart(' ');
            var lineEnd = value.IndexOf('\r'); // none when it is the head's last line (etcd sends it last)
            length = int.Parse(lineEnd < 0 ? value : value[..lineEnd], NumberStyles.None, CultureInfo.InvariantCulture);
        }

        _start = headerEnd + HeaderEnd.Length;
        if (chunked)
        {
            await SkipChunksAsync(cancellationToken);
        }
        else
        {
            await SkipAsync(length, cancellationToken);
        }

        if (close)
        {
            Reset();
        }

        return status;
    }

    public void Dispose() => Reset();

    private async Task<Socket> ConnectAsync(CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(_server.Host, _server.Port, cancellationToken);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private void Reset()
    {
        _socket?.Dispose();
        _socket = null;
        _start = _end = 0;
    }

    /// <summary>Receives until <paramref name="marker"/> is buffered; returns where it starts.</summary>
    private async Task<int> ReceiveUntilAsync(byte[] marker, CancellationToken cancellationToken)
    {
        while (true)
        {
            var found = _buffer.AsSpan(_start, _end - _start).IndexOf(marker);
            if (found >= 0)
            {
                return _start + found;
            }

            await ReceiveAsync(cancellationToken);
        }
    }

    private async Task SkipAsync(int count, CancellationToken cancellationToken)
    {
        while (_end - _start < count)
        {
            count -= _end - _start;
            _start = _end;
            await ReceiveAsync(cancellationToken);
        }

        _start += count;
    }

    /// <summary>Skips a chunked body: hexadecimal sizes, each chunk followed by CRLF, ending with a zero-size chunk.</summary>
    private async Task SkipChunksAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            var lineEnd = await ReceiveUntilAsync(LineEnd, cancellationToken);
            var size = _buffer.AsSpan(_start, lineEnd - _start);
            var extension = size.IndexOf((byte)';');
            if (!Utf8Parser.TryParse(extension >= 0 ? size[..extension] : size, out int length, out _, 'x'))
            {
                throw new InvalidDataException("Bad chunk size in a response.");
            }

            _start = lineEnd + 2;
            await SkipAsync(length + 2, cancellationToken); // the chunk and its CRLF (no trailers: the last chunk's CRLF ends the body)
            if (length == 0)
            {
                return;
            }
        }
    }

    private async Task ReceiveAsync(CancellationToken cancellationToken)
    {
        if (_start == _end)
        {
            _start = _end = 0;
        }
        else if (_end == _buffer.Length)
        {
            if (_start == 0)
            {
                Array.Resize(ref _buffer, _buffer.Length * 2);
            }
            else
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
        }

        var received = await _socket!.ReceiveAsync(_buffer.AsMemory(_end), SocketFlags.None, cancellationToken);
        if (received == 0)
        {
            Reset();
            throw new IOException("The node closed the connection.");
        }

        _end += received;
    }
}
