using System.Net;

namespace Registry.Tests.Infrastructure;

/// <summary>An open <c>text/event-stream</c> response (a session), read one event or comment at a time.</summary>
public sealed class SessionReader : IAsyncDisposable
{
    private readonly HttpResponseMessage _response;
    private readonly StreamReader _reader;

    private SessionReader(HttpResponseMessage response, StreamReader reader)
    {
        _response = response;
        _reader = reader;
    }

    public HttpStatusCode Status => _response.StatusCode;

    public HttpResponseMessage Response => _response;

    /// <summary>
    /// Opens a session; a refusal comes back as the response alone (<see cref="Stream"/> null)
    /// with its body read.
    /// </summary>
    public static async Task<(HttpResponseMessage Response, SessionReader? Stream)> OpenAsync(HttpClient client, string provider, int? ttl = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, ttl is null ? "/v1/sessions" : $"/v1/sessions?ttl={ttl}") { Content = Http.Json(provider) };
        var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            await response.Content.LoadIntoBufferAsync();
            return (response, null);
        }

        return (response, new SessionReader(response, new StreamReader(await response.Content.ReadAsStreamAsync())));
    }

    /// <summary>Opens a session that must start: its stream.</summary>
    public static async Task<SessionReader> StartAsync(HttpClient client, string provider, int? ttl = null)
    {
        var (response, stream) = await OpenAsync(client, provider, ttl);
        return stream ?? throw new InvalidOperationException($"The session was refused: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
    }

    /// <summary>The next event (<c>Name</c>, <c>Data</c>) or comment (<c>Name</c> ":", the comment's text); null at the end of the stream.</summary>
    public async Task<(string Name, string Data)?> ReadAsync(TimeSpan? timeout = null)
    {
        using var cancel = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        string? name = null;
        var data = new List<string>();
        while (await _reader.ReadLineAsync(cancel.Token) is { } line)
        {
            if (line.Length == 0)
            {
                if (name is not null || data.Count > 0)
                {
                    return (name ?? "message", string.Join('\n', data));
                }

                continue;
            }

            if (line.StartsWith(':'))
            {
                return (":", line[1..].Trim());
            }

            if (line.StartsWith("event: ", StringComparison.Ordinal))
            {
                name = line["event: ".Length..];
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                data.Add(line["data: ".Length..]);
            }
        }

        return null;
    }

    /// <summary>Reads until an event that is not a comment (or the end): the next event.</summary>
    public async Task<(string Name, string Data)?> ReadEventAsync(TimeSpan? timeout = null)
    {
        while (await ReadAsync(timeout) is { } next)
        {
            if (next.Name != ":")
            {
                return next;
            }
        }

        return null;
    }

    public ValueTask DisposeAsync()
    {
        _reader.Dispose();
        _response.Dispose();
        return ValueTask.CompletedTask;
    }
}
