using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;

namespace Registry.Benchmarks;

/// <summary>The calls the benchmark makes, over one connection pool per node.</summary>
internal sealed class RegistryHttp : IDisposable
{
    private static readonly MediaTypeHeaderValue Json = new("application/json");
    private readonly HttpClient _client;
    private readonly IReadOnlyList<string> _tokens;
    private int _nextToken = -1;

    /// <param name="baseAddress">The node.</param>
    /// <param name="tokens">
    /// Bearer tokens for a node that requires them, one per load client: prepared request
    /// <c>i</c> carries token <c>i mod n</c>, and each <c>HttpClient</c> call the next in turn.
    /// </param>
    /// <param name="sources">
    /// Loopback addresses to connect from, in turn (127.0.0.2, …): one address has about 28,000
    /// ephemeral ports towards one server port, fewer than 50,000 parked polls need.
    /// </param>
    public RegistryHttp(Uri baseAddress, IReadOnlyList<string>? tokens = null, IReadOnlyList<IPAddress>? sources = null)
    {
        _tokens = tokens ?? [];
        // One connection per parked poll (HTTP/1.1): the pool must not cap them, and idle
        // connections are kept between phases so ten thousand are not opened twice.
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = int.MaxValue,
            PooledConnectionLifetime = Timeout.InfiniteTimeSpan,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            ConnectTimeout = TimeSpan.FromSeconds(15),
            UseProxy = false,
            UseCookies = false,
            AutomaticDecompression = DecompressionMethods.None,
        };
        if (sources is { Count: > 0 })
        {
            var next = -1;
            handler.ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.Bind(new IPEndPoint(sources[(int)((uint)Interlocked.Increment(ref next) % (uint)sources.Count)], 0));
                    await socket.ConnectAsync(IPAddress.Parse(context.DnsEndPoint.Host), context.DnsEndPoint.Port, cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }

        _client = new HttpClient(handler) { BaseAddress = baseAddress, Timeout = TimeSpan.FromSeconds(120) };
    }

    public HttpClient Client => _client;

    public Uri BaseAddress => _client.BaseAddress!;

    /// <summary>A prepared POST for the lean connections, carrying load client <paramref name="client"/>'s token when there are tokens.</summary>
    public byte[] Post(string pathAndQuery, byte[] body, int client) =>
        LeanConnection.Post(BaseAddress, pathAndQuery, body, _tokens.Count == 0 ? null : _tokens[(int)((uint)client % (uint)_tokens.Count)]);

    private HttpRequestMessage Request(string pathAndQuery, HttpContent content)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(pathAndQuery, UriKind.Relative)) { Content = content };
        if (_tokens.Count > 0)
        {
            var token = _tokens[(int)((uint)Interlocked.Increment(ref _nextToken) % (uint)_tokens.Count)];
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return request;
    }

    public static string Provider(string application, string addr, IReadOnlyDictionary<string, string>? meta = null)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"{{\"application\":\"{application}\",\"protocol\":\"http\",\"addr\":\"{addr}\"");
        if (meta is not null)
        {
            text.Append(",\"meta\":{");
            text.AppendJoin(',', meta.Select(p => $"\"{p.Key}\":\"{p.Value}\""));
            text.Append('}');
        }

        return text.Append('}').ToString();
    }

    /// <summary>
    /// The sum of a histogram the node exports at <c>/metrics</c> (Prometheus text: the line
    /// <c>{name}_sum</c>, under any unit suffix), or null when it does not export it (yet).
    /// </summary>
    public async Task<double?> HistogramSumAsync(string name, CancellationToken cancellationToken)
    {
        var text = await _client.GetStringAsync("/metrics", cancellationToken);
        foreach (var line in text.Split('\n'))
        {
            var space = line.LastIndexOf(' ');
            if (line.StartsWith(name, StringComparison.Ordinal) && space > 0 && line[..space].Split('{')[0].EndsWith("_sum", StringComparison.Ordinal))
            {
                return double.Parse(line[(space + 1)..], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return null;
    }

    public async Task<HttpStatusCode> RegisterAsync(string body, int ttlSeconds, CancellationToken cancellationToken)
    {
        using var request = Request($"/v1/register?ttl={ttlSeconds}", Content(body));
        using var response = await _client.SendAsync(request, cancellationToken);
        return response.StatusCode;
    }

    public readonly record struct PollAnswer(HttpStatusCode Status, string? Version, long AnsweredAt, long Bytes);

    /// <summary>
    /// Subscribes to one application; with <paramref name="version"/> the node holds the poll.
    /// <paramref name="sent"/> runs once the request body has gone out (the poll is then about to park).
    /// </summary>
    public Task<PollAnswer> SubscribeAsync(string application, string? version, int waitSeconds, Action? sent, CancellationToken cancellationToken) =>
        SubscribeAsync([application], version, waitSeconds, sent, cancellationToken);

    /// <summary>The same for a subscription naming several applications.</summary>
    public async Task<PollAnswer> SubscribeAsync(IReadOnlyList<string> applications, string? version, int waitSeconds, Action? sent, CancellationToken cancellationToken)
    {
        var query = version is null ? "/v1/subscribe" : $"/v1/subscribe?version={Uri.EscapeDataString(version)}&wait={waitSeconds}";
        var entries = string.Join(',', applications.Select(a => $"{{\"provider\":\"{a}\",\"protocol\":\"http\"}}"));
        using var request = Request(query, new SignallingContent(Encoding.UTF8.GetBytes($"{{\"subscribes\":[{entries}]}}"), sent));
        using var response = await _client.SendAsync(request, cancellationToken);
        var answeredAt = Stopwatch.GetTimestamp();
        // The body must be read so the connection goes back to the pool.
        await response.Content.LoadIntoBufferAsync(cancellationToken);
        return new PollAnswer(response.StatusCode, response.Headers.ETag?.Tag.Trim('"'), answeredAt, response.Content.Headers.ContentLength ?? 0);
    }

    public void Dispose() => _client.Dispose();

    private static ByteArrayContent Content(string body)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
        content.Headers.ContentType = Json;
        return content;
    }

    /// <summary>A JSON body that says when it has been written to the connection.</summary>
    private sealed class SignallingContent : HttpContent
    {
        private readonly byte[] _body;
        private Action? _sent;

        public SignallingContent(byte[] body, Action? sent)
        {
            _body = body;
            _sent = sent;
            Headers.ContentType = Json;
        }

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            await stream.WriteAsync(_body, cancellationToken);
            await stream.FlushAsync(cancellationToken);
            Interlocked.Exchange(ref _sent, null)?.Invoke();
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override bool TryComputeLength(out long length)
        {
            length = _body.Length;
            return true;
        }
    }
}
