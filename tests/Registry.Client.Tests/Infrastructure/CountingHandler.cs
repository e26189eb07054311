using System.Collections.Concurrent;

namespace Registry.Client.Tests.Infrastructure;

/// <summary>Counts the requests the client sends (by path), and can make chosen ones fail as if the network dropped them.</summary>
public sealed class CountingHandler() : DelegatingHandler(new SocketsHttpHandler())
{
    private readonly ConcurrentDictionary<string, int> _byPath = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<(DateTimeOffset At, Uri Uri, int? Status)> _log = new();
    private readonly Lock _gate = new();
    private readonly List<(Func<CountingHandler, bool> Condition, TaskCompletionSource Met)> _waiters = [];
    private int _total;

    /// <summary>Requests whose path ends with this fail with an HttpRequestException; null lets everything through.</summary>
    public string? FailPathSuffix { get; set; }

    /// <summary>Requests whose path ends with this are answered 503 with <see cref="RetryAfter"/> by the handler itself, as a registry whose database is down.</summary>
    public string? UnavailablePathSuffix { get; set; }

    public TimeSpan RetryAfter { get; set; } = TimeSpan.FromSeconds(1);

    public int Total => Volatile.Read(ref _total);

    public int Count(string pathSuffix) => _byPath.Where(p => p.Key.EndsWith(pathSuffix, StringComparison.Ordinal)).Sum(p => p.Value);

    /// <summary>Every request sent, with its answer's status (null when it failed).</summary>
    public IReadOnlyList<(DateTimeOffset At, Uri Uri, int? Status)> Requests => [.. _log];

    /// <summary>Completes when, as a request is sent, <paramref name="condition"/> holds (checked at once too): a signal, not a polling loop.</summary>
    public Task WaitUntilAsync(Func<CountingHandler, bool> condition)
    {
        var met = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_gate)
        {
            if (condition(this))
            {
                return Task.CompletedTask;
            }

            _waiters.Add((condition, met));
        }

        return met.Task;
    }

    private void Signal()
    {
        lock (_gate)
        {
            foreach (var waiter in _waiters.Where(w => w.Condition(this)).ToList())
            {
                _waiters.Remove(waiter);
                waiter.Met.TrySetResult();
            }
        }
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        // When the request was sent (not answered): a long poll may be held for seconds.
        var sent = DateTimeOffset.UtcNow;
        Interlocked.Increment(ref _total);
        var path = request.RequestUri!.AbsolutePath;
        _byPath.AddOrUpdate(path, 1, (_, n) => n + 1);
        Signal();
        if (FailPathSuffix is { } suffix && path.EndsWith(suffix, StringComparison.Ordinal))
        {
            _log.Enqueue((sent, request.RequestUri, null));
            throw new HttpRequestException("Dropped by the test.");
        }

        if (UnavailablePathSuffix is { } unavailable && path.EndsWith(unavailable, StringComparison.Ordinal))
        {
            _log.Enqueue((sent, request.RequestUri, 503));
            var problem = new HttpResponseMessage(System.Net.HttpStatusCode.ServiceUnavailable)
            {
                RequestMessage = request,
                Content = new StringContent("""{"title":"The database cannot take a write","status":503}""", System.Text.Encoding.UTF8, "application/problem+json"),
            };
            problem.Headers.RetryAfter = new System.Net.Http.Headers.RetryConditionHeaderValue(RetryAfter);
            return problem;
        }

        try
        {
            var response = await base.SendAsync(request, cancellationToken);
            _log.Enqueue((sent, request.RequestUri, (int)response.StatusCode));
            return response;
        }
        catch (HttpRequestException)
        {
            _log.Enqueue((sent, request.RequestUri, null));
            throw;
        }
    }
}
