using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Registry.Tests.Infrastructure;

/// <summary>One request a <see cref="ProbeTarget"/> received: its path and the probing node's id (from its User-Agent).</summary>
public sealed record ProbeRequest(string Path, string Node, DateTimeOffset At);

/// <summary>
/// A provider for the registry to probe, on a loopback port: a minimal HTTP/1.1 responder
/// whose answer per path the test sets (status, delay, headers), and which records every
/// request with the node that sent it. A probe that only connects (tcp) counts as a connection.
/// It closes each connection after one answer unless <see cref="KeepAlive"/> is set.
/// </summary>
public sealed class ProbeTarget : IAsyncDisposable
{
    private readonly IPAddress _address;
    private readonly TcpListener _listener;
    private readonly ConcurrentDictionary<TcpClient, bool> _open = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<ProbeRequest> _requests = new();
    private readonly Task _accepting;
    private TaskCompletionSource _arrived = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _connections;

    /// <summary>Listens on <paramref name="address"/> (127.0.0.1 when not given; Linux answers all of 127.0.0.0/8).</summary>
    public ProbeTarget(IPAddress? address = null)
    {
        _address = address ?? IPAddress.Loopback;
        _listener = new TcpListener(_address, 0);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync();
    }

    public int Port { get; }

    /// <summary>The <c>addr</c> to register.</summary>
    public string Addr => $"{_address}:{Port}";

    /// <summary>
    /// Which probing nodes (by id) get no answer: their requests are recorded and their
    /// connections closed unanswered, as for a node whose route to the provider is gone.
    /// </summary>
    public Func<string, bool> CutOff { get; set; } = _ => false;

    /// <summary>What to answer a request for a path: status line code, extra header lines, delay before answering.</summary>
    public Func<string, (int Status, string Headers, TimeSpan Delay)> Answer { get; set; } = _ => (200, "", TimeSpan.Zero);

    /// <summary>Whether connections stay open for further requests (HTTP keep-alive), as most servers do.</summary>
    public bool KeepAlive { get; set; }

    public int Connections => Volatile.Read(ref _connections);

    public IReadOnlyList<ProbeRequest> Requests => [.. _requests];

    /// <summary>
    /// Waits until <paramref name="done"/> holds for the requests and connections seen (checked
    /// after each one); on timeout the failure lists what arrived, so a stall can be told from slowness.
    /// </summary>
    public async Task WaitUntilAsync(Func<ProbeTarget, bool> done, TimeSpan timeout)
    {
        var started = DateTimeOffset.UtcNow;
        using var deadline = new CancellationTokenSource(timeout);
        while (true)
        {
            var arrived = Volatile.Read(ref _arrived).Task;
            if (done(this))
            {
                return;
            }

            try
            {
                await arrived.WaitAsync(deadline.Token);
            }
            catch (OperationCanceledException) when (deadline.IsCancellationRequested)
            {
                throw new TimeoutException($"Waited {timeout} from {started:HH:mm:ss.fff}; {Connections} connections, requests: {Describe()}");
            }
        }
    }

    /// <summary>The requests seen, as time, node and path, for failure messages.</summary>
    public string Describe() => string.Join(", ", Requests.Select(r => $"{r.At:HH:mm:ss.fff} {r.Node} {r.Path}"));

    /// <summary>Stops listening: connections are refused from now on (those open stay open).</summary>
    public void Close() => _listener.Stop();

    /// <summary>Closes the connections open now, as a provider that stops does.</summary>
    public void CloseConnections()
    {
        foreach (var client in _open.Keys)
        {
            client.Dispose();
        }
    }

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                Interlocked.Increment(ref _connections);
                Signal();
                _ = ServeAsync(client);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException or InvalidOperationException)
        {
            // Closed: an accept begun after Close() throws "Not listening" (InvalidOperationException).
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        _open[client] = true;
        using (client)
        {
            try
            {
                var stream = client.GetStream();
                do
                {
                    if (!await AnswerAsync(stream))
                    {
                        return; // a tcp probe (connected, sent nothing), or the prober hung up
                    }
                }
                while (KeepAlive);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or SocketException or ObjectDisposedException)
            {
                // The prober gave up (timeout) or the target is closing.
            }
            finally
            {
                _open.TryRemove(client, out _);
            }
        }
    }

    /// <summary>Reads one request and answers it; false when the connection ended first.</summary>
    private async Task<bool> AnswerAsync(NetworkStream stream)
    {
        var head = await ReadHeadAsync(stream);
        if (head is null)
        {
            return false;
        }

        var lines = head.Split("\r\n");
        var path = lines[0].Split(' ')[1];
        var agent = lines.FirstOrDefault(l => l.StartsWith("User-Agent:", StringComparison.OrdinalIgnoreCase)) ?? "";
        var node = agent.Contains("(node ", StringComparison.Ordinal) ? agent[(agent.IndexOf("(node ", StringComparison.Ordinal) + 6)..].TrimEnd(')') : "";
        _requests.Enqueue(new ProbeRequest(path, node, DateTimeOffset.UtcNow));
        Signal();
        if (CutOff(node))
        {
            return false;
        }

        var (status, headers, delay) = Answer(path);
        if (delay > TimeSpan.Zero)
        {
            await Task.Delay(delay, _stop.Token);
        }

        var response = $"HTTP/1.1 {status} Status\r\n{headers}Content-Length: 5\r\n{(KeepAlive ? "" : "Connection: close\r\n")}\r\nhello";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(response), _stop.Token);
        return true;
    }

    private async Task<string?> ReadHeadAsync(NetworkStream stream)
    {
        var buffer = new byte[8192];
        var length = 0;
        while (length < buffer.Length)
        {
            var read = await stream.ReadAsync(buffer.AsMemory(length), _stop.Token);
            if (read == 0)
            {
                return null;
            }

            length += read;
            var text = Encoding.ASCII.GetString(buffer, 0, length);
            if (text.Contains("\r\n\r\n", StringComparison.Ordinal))
            {
                return text;
            }
        }

        return null;
    }

    private void Signal() => Interlocked.Exchange(ref _arrived, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}
