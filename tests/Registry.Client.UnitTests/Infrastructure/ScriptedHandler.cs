using System.Collections.Concurrent;
using System.Net;
using System.Text;
using System.Threading.Channels;

namespace Registry.Client.UnitTests.Infrastructure;

/// <summary>One request the client sent, as the scripted registry saw it.</summary>
public sealed record SentRequest(HttpMethod Method, Uri Uri, string Body, string? Authorization, string? IfNoneMatch, DateTimeOffset At)
{
    public string Path => Uri.AbsolutePath;
}

/// <summary>
/// A registry played by the test: every request is recorded and answered by <see cref="Respond"/>, which may hold
/// it (a long poll) on a task the test completes. No socket, no real time.
/// </summary>
public sealed class ScriptedHandler(TimeProvider time) : HttpMessageHandler
{
    private readonly ConcurrentQueue<SentRequest> _sent = new();
    private readonly Channel<SentRequest> _arrivals = Channel.CreateUnbounded<SentRequest>();

    public Func<SentRequest, CancellationToken, Task<HttpResponseMessage>> Respond { get; set; } =
        (_, _) => Task.FromResult(new HttpResponseMessage(HttpStatusCode.NotFound));

    public IReadOnlyList<SentRequest> Sent => [.. _sent];

    public int Count(string path) => _sent.Count(r => r.Path == path);

    /// <summary>The next request to arrive (in real time, bounded) that satisfies <paramref name="match"/>.</summary>
    public async Task<SentRequest> NextAsync(Func<SentRequest, bool>? match = null)
    {
        using var deadline = new CancellationTokenSource(Scripted.Patience);
        while (true)
        {
            var request = await _arrivals.Reader.ReadAsync(deadline.Token);
            if (match is null || match(request))
            {
                return request;
            }
        }
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var body = request.Content is null ? "" : await request.Content.ReadAsStringAsync(cancellationToken);
        var sent = new SentRequest(
            request.Method,
            request.RequestUri!,
            body,
            request.Headers.Authorization?.ToString(),
            request.Headers.TryGetValues("If-None-Match", out var tags) ? string.Join(",", tags) : null,
            time.GetUtcNow());
        _sent.Enqueue(sent);
        _arrivals.Writer.TryWrite(sent);
        var response = await Respond(sent, cancellationToken);
        response.RequestMessage = request;
        return response;
    }
}

/// <summary>Answers and clients for scripted tests.</summary>
public static class Scripted
{
    /// <summary>The most real time a test waits for something that takes microseconds.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    /// <summary>The per-request timeouts of <see cref="Options"/>: 5 s, and a 30 s poll's 30 + 30/16 + 10 s.</summary>
    public static bool IsRequestTimeout(TimeSpan due) => due == TimeSpan.FromSeconds(5) || due == TimeSpan.FromSeconds(41.875);

    public static readonly Uri ServerA = new("http://registry-a:5080/");
    public static readonly Uri ServerB = new("http://registry-b:5080/");

    public static HttpResponseMessage Json(HttpStatusCode status, string json, string mediaType = "application/json") =>
        new(status) { Content = new StringContent(json, Encoding.UTF8, mediaType) };

    public static HttpResponseMessage Answer(string version, params (string Application, string Protocol, string Addr)[] endpoints)
    {
        var items = string.Join(",", endpoints.Select(e => $$"""{"application":"{{e.Application}}","protocol":"{{e.Protocol}}","addr":"{{e.Addr}}","meta":""" + "{}}"));
        var response = Json(HttpStatusCode.OK, $$"""{"version":"{{version}}","endpoints":[{{items}}]}""");
        response.Headers.ETag = new System.Net.Http.Headers.EntityTagHeaderValue($"\"{version}\"");
        return response;
    }

    public static HttpResponseMessage Lease(int ttl, DateTimeOffset now) =>
        Json(HttpStatusCode.OK, $$"""{"application":"a","protocol":"http","addr":"10.0.0.1:80","meta":{},"ttl":{{ttl}},"expires":"{{now.AddSeconds(ttl):O}}"}""");

    public static HttpResponseMessage Problem(HttpStatusCode status, string title, string extra = "")
    {
        var response = Json(status, $$"""{"type":"https://tools.ietf.org/html/rfc9110","title":"{{title}}","status":{{(int)status}}""" + extra + "}", "application/problem+json");
        if (status == HttpStatusCode.Unauthorized)
        {
            response.Headers.WwwAuthenticate.Add(new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer"));
        }

        return response;
    }

    public static HttpResponseMessage Unavailable(System.Net.Http.Headers.RetryConditionHeaderValue? retryAfter)
    {
        var response = Problem(HttpStatusCode.ServiceUnavailable, "The database cannot take a write");
        response.Headers.RetryAfter = retryAfter;
        return response;
    }

    /// <summary>A long poll the registry holds until the client gives up on it.</summary>
    public static async Task<HttpResponseMessage> HeldAsync(CancellationToken cancellationToken)
    {
        await Task.Delay(Timeout.Infinite, cancellationToken);
        throw new InvalidOperationException("Unreachable.");
    }

    /// <summary>Options with one or two scripted servers and round numbers for the arithmetic of delays.</summary>
    public static RegistryClientOptions Options(params Uri[] servers)
    {
        var options = new RegistryClientOptions
        {
            Ttl = TimeSpan.FromSeconds(30),
            PollWait = TimeSpan.FromSeconds(30),
            RequestTimeout = TimeSpan.FromSeconds(5),
            RetryBaseDelay = TimeSpan.FromSeconds(1),
            RetryMaxDelay = TimeSpan.FromSeconds(30),
        };
        foreach (var server in servers.Length == 0 ? [ServerA] : servers)
        {
            options.Servers.Add(server);
        }

        return options;
    }
}
