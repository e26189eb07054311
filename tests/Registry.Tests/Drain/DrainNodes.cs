using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using Npgsql;
using Registry.Membership;
using Registry.Tests.Infrastructure;

namespace Registry.Tests.Drain;

/// <summary>What the drain tests do to nodes and consumers.</summary>
internal static class DrainNodes
{
    /// <summary>Waits until <paramref name="count"/> nodes have marked themselves alive in <c>nodes</c> (after a reset emptied it).</summary>
    public static async Task WaitUntilMarkedAsync(RegistryCluster cluster, int count)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            await using (var connection = await cluster.OpenAsync())
            await using (var marked = new NpgsqlCommand("SELECT count(*) FROM nodes WHERE last_seen_at > clock_timestamp() - interval '1 second'", connection))
            {
                if ((long)(await marked.ExecuteScalarAsync())! >= count)
                {
                    return;
                }
            }

            // The marks come every 200 ms (TestSettings); nothing signals them outside the node.
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), "the nodes did not mark themselves alive");
            await Task.Delay(50);
        }
    }

    public static string IdOf(RegistryNode node) => node.Get<NodeIdentity>().Id;

    /// <summary>A parked poll that notes when its whole answer had arrived (a Stopwatch timestamp).</summary>
    public static async Task<(long ReceivedAt, JsonNode Answer)> PollAsync(HttpClient client, string subscription, string version)
    {
        using var response = await client.PostAsync($"/v1/subscribe?version={version}&wait=30", Http.Json(subscription));
        var text = await response.Content.ReadAsStringAsync();
        var receivedAt = Stopwatch.GetTimestamp();
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return (receivedAt, JsonNode.Parse(text)!);
    }

    /// <summary>
    /// Registers <paramref name="count"/> instances of the application with about 30 KB of meta
    /// each, so an answer holding them is megabytes: more than a socket's buffers take.
    /// </summary>
    public static async Task RegisterBigAsync(HttpClient client, string application, int count)
    {
        var value = new string('x', 480);
        var meta = "{" + string.Join(",", Enumerable.Range(0, 60).Select(i => $"\"k{i:D2}\":\"{value}\"")) + "}";
        await Parallel.ForEachAsync(Enumerable.Range(0, count), new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (i, token) =>
        {
            using var response = await client.PostJsonAsync("/v1/register", Http.Provider(application, $"10.9.{i / 250}.{i % 250}:80", meta), token);
            response.EnsureSuccessStatusCode();
        });
    }

    /// <summary>
    /// A consumer that sends its poll over a raw connection and never reads: once its answer is
    /// due, the answer fills the socket's buffers and the server's write cannot finish.
    /// </summary>
    public static async Task<Socket> StalledPollAsync(Uri node, string subscription, string version)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        await socket.ConnectAsync(node.Host, node.Port);
        var body = Encoding.UTF8.GetBytes(subscription);
        var head = Encoding.ASCII.GetBytes(
            $"POST /v1/subscribe?version={version}&wait=30 HTTP/1.1\r\nHost: {node.Host}:{node.Port}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n");
        await socket.SendAsync(head.Concat(body).ToArray());
        return socket;
    }

    /// <summary>The current version of a subscription's answer, without reading a big body.</summary>
    public static async Task<string> VersionAsync(HttpClient client, string subscription)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/subscribe") { Content = Http.Json(subscription) };
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        response.EnsureSuccessStatusCode();
        return response.Headers.ETag!.Tag.Trim('"');
    }
}

/// <summary>A registry node in a process of its own, so a test can kill it outright.</summary>
internal sealed class NodeProcess : IAsyncDisposable
{
    private readonly Process _process;

    private NodeProcess(Process process, Uri address)
    {
        _process = process;
        Address = address;
    }

    public Uri Address { get; }

    public static async Task<NodeProcess> StartAsync(string connectionString)
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }

        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = AppContext.BaseDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Registry.Server.dll"));
        start.ArgumentList.Add("--urls");
        start.ArgumentList.Add($"http://127.0.0.1:{port}");
        start.Environment["ConnectionStrings__Registry"] = connectionString;
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        foreach (var (key, value) in TestSettings.Fast)
        {
            start.Environment[key.Replace(":", "__", StringComparison.Ordinal)] = value;
        }

        var process = Process.Start(start)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var node = new NodeProcess(process, new Uri($"http://127.0.0.1:{port}"));
        using var client = new HttpClient { BaseAddress = node.Address };
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                if ((await client.GetAsync(new Uri("/readyz", UriKind.Relative))).IsSuccessStatusCode)
                {
                    return node;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }

            if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(60))
            {
                await node.DisposeAsync();
                throw new InvalidOperationException("The node process did not become ready.");
            }

            await Task.Delay(100);
        }
    }

    /// <summary>Kills the process at once: no shutdown, no last words to the database.</summary>
    public async Task KillAsync()
    {
        _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await KillAsync();
        }

        _process.Dispose();
    }
}
