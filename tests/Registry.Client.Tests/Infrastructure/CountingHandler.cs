using System.Collections.Concurrent;

namespace Registry.Client.Tests.Infrastructure;

/// <summary>Counts the requests the client sends (by path), and can make chosen ones fail as if the network dropped them.</summary>
public sealed class CountingHandler() : DelegatingHandler(new SocketsHttpHandler())
{
    private readonly ConcurrentDictionary<string, int> _byPath = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<(DateTimeOffset At, Uri Uri, int? Status)> _log = new();
    private int _total;

    /// <summary>Requests whose path ends with this fail with an HttpRequestException; null lets everything through.</summary>
    public string? FailPathSuffix { get; set; }

    public int Total => Volatile.Read(ref _total);

    public int Count(string pathSuffix) => _byPath.Where(p => p.Key.EndsWith(pathSuffix, StringComparison.Ordinal)).Sum(p => p.Value);

    /// <summary>Every request sent, with its answer's status (null when it failed).</summary>
    public IReadOnlyList<(DateTimeOffset At, Uri Uri, int? Status)> Requests => [.. _log];

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _total);
        var path = request.RequestUri!.AbsolutePath;
        _byPath.AddOrUpdate(path, 1, (_, n) => n + 1);
        if (FailPathSuffix is { } suffix && path.EndsWith(suffix, StringComparison.Ordinal))
        {
            _log.Enqueue((DateTimeOffset.UtcNow, request.RequestUri, null));
            throw new HttpRequestException("Dropped by the test.");
        }

        try
        {
            var response = await base.SendAsync(request, cancellationToken);
            _log.Enqueue((DateTimeOffset.UtcNow, request.RequestUri, (int)response.StatusCode));
            return response;
        }
        catch (HttpRequestException)
        {
            _log.Enqueue((DateTimeOffset.UtcNow, request.RequestUri, null));
            throw;
        }
    }
}
