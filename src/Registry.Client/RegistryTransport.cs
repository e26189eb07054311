using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Registry.Client;

/// <summary>
/// Sends one request of the API to the registry nodes in turn: first the node that answered
/// last, then the others, so one dead node costs one failed connection, not an outage.
/// </summary>
internal sealed partial class RegistryTransport
{
    private static readonly MediaTypeHeaderValue JsonType = new("application/json") { CharSet = "utf-8" };

    private readonly Func<HttpClient> _http;
    private readonly Func<CancellationToken, ValueTask<string?>>? _token;
    private readonly string? _fixedToken;
    private readonly Uri[] _servers;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private int _preferred;

    // http gives the client for each request: a fixed one, or IHttpClientFactory.CreateClient, whose pooled
    // handlers rotate so that a long-lived registry client still sees DNS changes of the registry's names.
    // token gives the bearer token of each request, or fixedToken is sent on every one (neither: none is sent).
    public RegistryTransport(
        Func<HttpClient> http, IEnumerable<Uri> servers, Func<CancellationToken, ValueTask<string?>>? token, TimeProvider time, ILogger logger, string? fixedToken = null)
    {
        _http = http;
        _token = token;
        _fixedToken = fixedToken;
        // A base URL without a trailing slash would lose its last segment when combined with a relative path.
        _servers = servers.Select(s => s.AbsoluteUri.EndsWith('/') ? s : new Uri(s.AbsoluteUri + "/")).ToArray();
        _time = time;
        _logger = logger;
    }

    /// <summary>A transport that is never sent on: for leases and subscriptions that hold fixed values.</summary>
    public static RegistryTransport Unused() =>
        new(() => throw new InvalidOperationException("A fixed lease or subscription sends nothing."), [], null, TimeProvider.System, NullLogger.Instance);

    /// <summary>Registers (or re-registers) the instance; <paramref name="query"/> holds more query parameters, each starting with <c>&amp;</c> (a probe's).</summary>
    public async Task<LeaseDocument> RegisterAsync(ProviderInstance provider, int ttlSeconds, TimeSpan timeout, CancellationToken cancellationToken, string query = "")
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(provider, ClientJson.Default.ProviderInstance);
        using var response = await SendAsync(HttpMethod.Post, string.Create(CultureInfo.InvariantCulture, $"v1/register?ttl={ttlSeconds}{query}"), body, null, timeout, cancellationToken).ConfigureAwait(false);
        await EnsureSuccessAsync(response, "register", timeout, cancellationToken).ConfigureAwait(false);
        return await ReadLeaseAsync(response, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Opens a session (<c>POST /v1/sessions</c>) on the first node that takes it; the caller reads its event stream.
    /// <paramref name="timeout"/> covers the answer's headers only.
    /// </summary>
    public async Task<SessionConnection> OpenSessionAsync(ProviderInstance provider, int ttlSeconds, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(provider, ClientJson.Default.ProviderInstance);
        // The node that answered, as SendAsync saw it: _preferred may have been moved since by a concurrent request.
        var (response, server, unanswered) = await SendToAnyAsync(
            HttpMethod.Post, string.Create(CultureInfo.InvariantCulture, $"v1/sessions?ttl={ttlSeconds}"), body, null, timeout,
            HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false);
        try
        {
            await EnsureSuccessAsync(response, "open session", timeout, cancellationToken).ConfigureAwait(false);
            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            return new SessionConnection(response, stream, server, unanswered, KeepAliveOf(response));
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    /// <summary>Every how long the node says its session's stream carries a keep-alive (<c>X-Registry-Keep-Alive</c>, seconds); null when it does not say.</summary>
    private static TimeSpan? KeepAliveOf(HttpResponseMessage response) =>
        response.Headers.TryGetValues("X-Registry-Keep-Alive", out var values)
        && int.TryParse(values.FirstOrDefault(), NumberStyles.None, CultureInfo.InvariantCulture, out var seconds) && seconds is > 0 and <= 86_400
            ? TimeSpan.FromSeconds(seconds)
            : null;

    /// <summary>Makes the next request start at the server after <paramref name="server"/> (whose session failed), unless another already moved on.</summary>
    public void Avoid(int server)
    {
        if (_servers.Length > 1)
        {
            Interlocked.CompareExchange(ref _preferred, (server + 1) % _servers.Length, server);
        }
    }

    /// <summary>Renews the lease; <see langword="null"/> when the registry does not know the instance (it must register again).</summary>
    public async Task<LeaseDocument?> HeartbeatAsync(ProviderInstance provider, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(provider, ClientJson.Default.ProviderInstance);
        using var response = await SendAsync(HttpMethod.Post, "v1/heartbeat", body, null, timeout, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }

        await EnsureSuccessAsync(response, "heartbeat", timeout, cancellationToken).ConfigureAwait(false);
        return await ReadLeaseAsync(response, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Removes the instance; <see langword="false"/> when it was not registered.</summary>
    public async Task<bool> UnregisterAsync(ProviderInstance provider, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(provider, ClientJson.Default.ProviderInstance);
        using var response = await SendAsync(HttpMethod.Post, "v1/unregister", body, null, timeout, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotFound)
        {
            return false;
        }

        await EnsureSuccessAsync(response, "unregister", timeout, cancellationToken).ConfigureAwait(false);
        return true;
    }

    /// <summary>
    /// Removes the instance and waits until its consumers have heard (<c>?drain=</c>); <see langword="null"/>
    /// when it was not registered.
    /// </summary>
    public async Task<DrainResult?> DrainAsync(ProviderInstance provider, int seconds, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(provider, ClientJson.Default.ProviderInstance);
        // What a drain answers depends on the node that removed the instance. Once a node may have taken it (no answer
        // in time, a proxy's 502 or 504), the next would answer 404 (removed already) as if nobody had watched it, after
        // holding it for a whole drain again: the drain fails instead, and the caller unregisters plainly.
        var (response, _, _) = await SendToAnyAsync(
            HttpMethod.Post, string.Create(CultureInfo.InvariantCulture, $"v1/unregister?drain={seconds}"), body, null, timeout,
            HttpCompletionOption.ResponseContentRead, cancellationToken, stopOnceTaken: true).ConfigureAwait(false);
        using (response)
        {
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                return null;
            }

            await EnsureSuccessAsync(response, "drain", timeout, cancellationToken).ConfigureAwait(false);
            return await ReadAsync(response, ClientJson.Default.DrainResult, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The one-provider answer at once (<c>GET /v1/services/{application}</c>); <see langword="null"/> when
    /// <paramref name="ifNoneMatch"/> is still the current version (<c>304</c>).
    /// </summary>
    public async Task<RegistryAnswer?> GetServiceAsync(string application, string? ifNoneMatch, TimeSpan timeout, CancellationToken cancellationToken)
    {
        // wait=0: a conditional GET answers at once (304 when unchanged) instead of being held like a poll.
        var path = $"v1/services/{Uri.EscapeDataString(application)}{(ifNoneMatch is null ? "" : "?wait=0")}";
        using var response = await SendAsync(HttpMethod.Get, path, null, ifNoneMatch, timeout, cancellationToken).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NotModified)
        {
            return null;
        }

        await EnsureSuccessAsync(response, "get service", timeout, cancellationToken).ConfigureAwait(false);
        return await ReadAsync(response, ClientJson.Default.RegistryAnswer, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The applications registered now (<c>GET /v1/services</c>).</summary>
    public async Task<IReadOnlyList<ServiceCount>> GetServicesAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var response = await SendAsync(HttpMethod.Get, "v1/services", null, null, timeout, cancellationToken).ConfigureAwait(false);
        await EnsureSuccessAsync(response, "list services", timeout, cancellationToken).ConfigureAwait(false);
        return (await ReadAsync(response, ClientJson.Default.ServicesDocument, cancellationToken).ConfigureAwait(false)).Services;
    }

    /// <summary>
    /// One long poll: sends the version held and takes what comes back, with how old the answer is when the node
    /// serves it from memory while cut off from the database (<c>X-Registry-Stale</c> with its <c>Age</c>; null when
    /// it is current), and which server gave it.
    /// </summary>
    public async Task<(RegistryAnswer Answer, TimeSpan? StaleAge, int Server)> SubscribeAsync(byte[] subscription, string? version, TimeSpan wait, CancellationToken cancellationToken)
    {
        var waitSeconds = (int)Math.Ceiling(wait.TotalSeconds);
        var path = version is null
            ? "v1/subscribe"
            : string.Create(CultureInfo.InvariantCulture, $"v1/subscribe?version={Uri.EscapeDataString(version)}&wait={waitSeconds}");
        // The registry adds up to wait/16 of jitter; the rest of the margin is for the network.
        var timeout = TimeSpan.FromSeconds(waitSeconds + (waitSeconds / 16.0) + 10);
        var (response, server, _) = await SendToAnyAsync(
            HttpMethod.Post, path, subscription, null, timeout, HttpCompletionOption.ResponseContentRead, cancellationToken).ConfigureAwait(false);
        using (response)
        {
            await EnsureSuccessAsync(response, "subscribe", timeout, cancellationToken).ConfigureAwait(false);
            var answer = await ReadAsync(response, ClientJson.Default.RegistryAnswer, cancellationToken).ConfigureAwait(false);
            // Age is whole seconds, rounded down: the answer may be up to a second older.
            TimeSpan? staleAge = response.Headers.TryGetValues("X-Registry-Stale", out var stale) && stale.Contains("true", StringComparer.OrdinalIgnoreCase)
                ? (response.Headers.Age ?? TimeSpan.Zero) + TimeSpan.FromSeconds(1)
                : null;
            return (answer, staleAge, server);
        }
    }

    private async Task<HttpResponseMessage> SendAsync(
        HttpMethod method, string path, byte[]? body, string? ifNoneMatch, TimeSpan timeout, CancellationToken cancellationToken,
        HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead) =>
        (await SendToAnyAsync(method, path, body, ifNoneMatch, timeout, completion, cancellationToken).ConfigureAwait(false)).Response;

    /// <summary>
    /// Whether SocketsHttpHandler's ConnectTimeout cancelled the request: a TimeoutException of its own inside. An
    /// HttpClient.Timeout (an app's client) also puts a TimeoutException there, around the cancellation of a request
    /// that may have been sent.
    /// </summary>
    private static bool IsConnectTimeout(OperationCanceledException e) => e.InnerException is TimeoutException { InnerException: not OperationCanceledException };

    /// <summary>
    /// Sends to each node in turn until one answers; the answer, the index of the node that gave it, and how many
    /// earlier nodes may have taken the request without answering it (a timeout, a connection broken once made, a
    /// proxy's 502 or 504): such a node may still act on it. The count goes on the exception when none answers.
    /// With <paramref name="stopOnceTaken"/>, no further node is tried once one may have taken the request.
    /// </summary>
    private async Task<(HttpResponseMessage Response, int Server, int Unanswered)> SendToAnyAsync(
        HttpMethod method, string path, byte[]? body, string? ifNoneMatch, TimeSpan timeout, HttpCompletionOption completion,
        CancellationToken cancellationToken, bool stopOnceTaken = false)
    {
        var token = await TokenAsync(timeout, cancellationToken).ConfigureAwait(false);
        Exception? last = null;
        var unanswered = 0;
        HttpStatusCode? lastStatus = null;
        RegistryProblem? lastProblem = null;
        TimeSpan? retryAfter = null;
        var first = Volatile.Read(ref _preferred);
        for (var i = 0; i < _servers.Length && !(stopOnceTaken && unanswered > 0); i++)
        {
            var index = (first + i) % _servers.Length;
            var server = _servers[index];
            using var request = new HttpRequestMessage(method, new Uri(server, path));
            if (body is not null)
            {
                request.Content = new ByteArrayContent(body) { Headers = { ContentType = JsonType } };
            }

            if (token is not null)
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            }

            if (ifNoneMatch is not null)
            {
                request.Headers.TryAddWithoutValidation("If-None-Match", $"\"{ifNoneMatch}\"");
            }

            using var timeoutSource = new CancellationTokenSource(timeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
            HttpResponseMessage response;
            try
            {
                // The body is read within the timeout (ResponseContentRead), so a node that stalls mid-answer counts as
                // failed; a session's stream is read by its caller (ResponseHeadersRead).
                response = await _http().SendAsync(request, completion, linked.Token).ConfigureAwait(false);
            }
            catch (HttpRequestException e)
            {
                last = e;
                // Not connected, the name not resolved, the TLS handshake failed: nothing was sent.
                unanswered += e.HttpRequestError is HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.SecureConnectionError ? 0 : 1;
                LogServerFailed(_logger, server, e.Message);
                continue;
            }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested && !timeoutSource.IsCancellationRequested && IsConnectTimeout(e))
            {
                // The handler's ConnectTimeout (it cancels from inside, before this request's deadline): nothing was sent.
                last = new TimeoutException($"{server} could not be connected to: {e.InnerException!.Message}", e);
                LogServerFailed(_logger, server, last.Message);
                continue;
            }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
            {
                last = new TimeoutException($"{server} did not answer within {timeout}.", e);
                unanswered++;
                LogServerFailed(_logger, server, last.Message);
                continue;
            }
#pragma warning disable CA1031 // Anything an app-wide handler throws for one node (a resilience pipeline's TimeoutRejectedException or
            // BrokenCircuitException) says nothing about the other nodes: try them; the caller hears it if all fail.
            catch (Exception e) when (!cancellationToken.IsCancellationRequested)
#pragma warning restore CA1031
            {
                last = e;
                unanswered++;
                LogServerFailed(_logger, server, e.Message);
                continue;
            }

            if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden && !IsProxysClientError(response))
            {
                // Every node checks the same credentials: another node would answer the same, and a retry storm
                // of refused tokens is what the registry rate-limits. Not an outage.
                using (response)
                {
                    var problem = await ProblemAsync(response, timeout, cancellationToken).ConfigureAwait(false);
                    throw new RegistryAccessDeniedException(Refusal(path, response, problem), response.StatusCode, problem);
                }
            }

            if ((int)response.StatusCode >= 500 || response.StatusCode == HttpStatusCode.TooManyRequests || IsProxysClientError(response))
            {
                using (response)
                {
                    var after = RetryAfter(response);
                    retryAfter = after > retryAfter || retryAfter is null ? after : retryAfter;
                    last = new HttpRequestException($"{server} answered {(int)response.StatusCode} {response.ReasonPhrase}.", null, response.StatusCode);
                    lastStatus = response.StatusCode;
                    lastProblem = await ProblemAsync(response, timeout, cancellationToken).ConfigureAwait(false);
                    // A proxy's bad gateway or gateway timeout: the node behind it may have taken the request.
                    unanswered += response.StatusCode is HttpStatusCode.BadGateway or HttpStatusCode.GatewayTimeout ? 1 : 0;
                    LogServerFailed(_logger, server, last.Message);
                    continue;
                }
            }

            Volatile.Write(ref _preferred, index);
            // Which node answered, for a body that turns out unreadable (see ReadAsync).
            response.RequestMessage ??= request;
            return (response, index, unanswered);
        }

        // The status and problem are the last node's that answered at all, when one did.
        throw new RegistryUnavailableException($"No registry server could serve {path}: {last?.Message}", retryAfter, lastStatus, lastProblem, last)
        {
            Unanswered = unanswered,
        };
    }

    /// <summary>
    /// A <c>4xx</c> that is no refusal by the registry: one that says nothing about the request (<c>408</c> a proxy's
    /// timeout, <c>421</c> a connection to the wrong node, <c>425</c> too early), or any <c>4xx</c> without the problem
    /// document the registry sends with every error (an ingress's HTML <c>404</c>). Another node, or a later attempt,
    /// may answer it: it is failed over and backed off like a <c>5xx</c>.
    /// </summary>
    private static bool IsProxysClientError(HttpResponseMessage response) =>
        (int)response.StatusCode is >= 400 and < 500
        && ((int)response.StatusCode is 408 or 421 or 425
            || !string.Equals(response.Content.Headers.ContentType?.MediaType, "application/problem+json", StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The token for one request, within the request's <paramref name="timeout"/>: a provider that never returns
    /// (an identity provider that hangs, whether or not it heeds its token) is an outage, retried with backoff,
    /// rather than a call, a heartbeat or a host's start held for ever.
    /// </summary>
    private async ValueTask<string?> TokenAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (_token is null)
        {
            return _fixedToken;
        }

        using var timeoutSource = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
        Task<string?>? call = null;
        try
        {
            call = _token(linked.Token).AsTask();
            // Trimmed: a token read from a mounted file usually ends with a line break, which no header may carry.
            var token = (await call.WaitAsync(linked.Token).ConfigureAwait(false))?.Trim();
            return string.IsNullOrEmpty(token) ? null : token;
        }
        catch (OperationCanceledException e) when (timeoutSource.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new RegistryUnavailableException(
                string.Create(CultureInfo.InvariantCulture, $"The token provider did not answer within {timeout.TotalSeconds:0.###} s."), e);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // A token file mid-rotation, an identity provider that is down: transient, retried with backoff.
            throw new RegistryUnavailableException($"The token provider failed: {e.Message}", e);
        }
        finally
        {
            // A provider that ignores its token is left to finish on its own (timed out, or its caller gave up); what it
            // throws then is observed here.
            // Attached to a call that has failed meanwhile too (the observer then runs at once).
            if (call is { IsCompletedSuccessfully: false })
            {
                _ = call.ContinueWith(static t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
        }
    }

    private TimeSpan? RetryAfter(HttpResponseMessage response) => response.Headers.RetryAfter switch
    {
        { Delta: { } delta } => delta,
        { Date: { } date } => date - _time.GetUtcNow() is var wait && wait > TimeSpan.Zero ? wait : TimeSpan.Zero,
        _ => null,
    };

    private async Task EnsureSuccessAsync(HttpResponseMessage response, string operation, TimeSpan timeout, CancellationToken cancellationToken)
    {
        if (response.IsSuccessStatusCode)
        {
            return;
        }

        // A problem document names the field and the reason: worth carrying into the exception.
        var problem = await ProblemAsync(response, timeout, cancellationToken).ConfigureAwait(false);
        throw new RegistryClientException(Refusal(operation, response, problem), response.StatusCode, problem);
    }

    /// <summary>
    /// The problem document of an error answer; null when there is none, or when it does not arrive within
    /// <paramref name="timeout"/>: a session's answer is taken at its headers, and a proxy may send an error's
    /// headers and stall its body, which would otherwise hold the caller for good.
    /// </summary>
    private async Task<RegistryProblem?> ProblemAsync(HttpResponseMessage response, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var timeoutSource = new CancellationTokenSource(timeout, _time);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);
        try
        {
            return RegistryProblem.TryParse(await response.Content.ReadAsStringAsync(linked.Token).ConfigureAwait(false));
        }
        catch (Exception e) when (e is HttpRequestException or IOException
            || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
        {
            return null;
        }
    }

    /// <summary>A lease document with a TTL: a 2xx without one is not the registry's, and heartbeats timed by it would not wait.</summary>
    private async Task<LeaseDocument> ReadLeaseAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var lease = await ReadAsync(response, ClientJson.Default.LeaseDocument, cancellationToken).ConfigureAwait(false);
        return lease.Ttl >= 1
            ? lease
            : throw new RegistryUnavailableException($"The registry's answer could not be read: its lease has no positive ttl ({lease.Ttl}).");
    }

    private static string Refusal(string operation, HttpResponseMessage response, RegistryProblem? problem)
    {
        var message = new StringBuilder()
            .Append(CultureInfo.InvariantCulture, $"The registry refused {operation}: {(int)response.StatusCode} {response.ReasonPhrase}");
        if (problem is not null)
        {
            message.Append(CultureInfo.InvariantCulture, $". {problem}");
            foreach (var (field, reasons) in problem.Errors)
            {
                message.Append(CultureInfo.InvariantCulture, $" {field}: {string.Join(" ", reasons)}");
            }
        }

        return message.ToString();
    }

    private async Task<T> ReadAsync<T>(HttpResponseMessage response, JsonTypeInfo<T> type, CancellationToken cancellationToken)
    {
        try
        {
            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (stream.ConfigureAwait(false))
            {
                return await JsonSerializer.DeserializeAsync(stream, type, cancellationToken).ConfigureAwait(false)
                    ?? throw new JsonException("The body is JSON null.");
            }
        }
        catch (Exception e) when (e is JsonException or ArgumentException)
        {
            // Something that is not the registry (a proxy's error page) answered 2xx: transient, try again later, at
            // the next node: this one would answer the same, and every loop would otherwise start at it again.
            if (response.RequestMessage?.RequestUri is { } answered && Array.FindIndex(_servers, server => server.IsBaseOf(answered)) is var index and >= 0)
            {
                Avoid(index);
            }

            throw new RegistryUnavailableException($"The registry's answer could not be read: {e.Message}", null, e);
        }
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Registry server {Server} failed: {Reason}")]
    private static partial void LogServerFailed(ILogger logger, Uri server, string reason);
}

/// <summary>An open session's response: its event stream, and which server holds it.</summary>
internal sealed class SessionConnection(HttpResponseMessage response, Stream body, int server, int unanswered, TimeSpan? keepAlive) : IDisposable
{
    /// <summary>Every how long its node sends a keep-alive, as it said; null when it did not.</summary>
    public TimeSpan? KeepAlive { get; } = keepAlive;

    public StreamReader Reader { get; } = new(body);

    /// <summary>The index of the server that holds it.</summary>
    public int Server { get; } = server;

    /// <summary>How many servers tried before this one took the open without answering: each may still open a session of its own.</summary>
    public int Unanswered { get; } = unanswered;

    /// <summary>Closes the connection: the node removes the instance (unless the session ended first).</summary>
    public void Dispose()
    {
        Reader.Dispose();
        response.Dispose();
    }
}
