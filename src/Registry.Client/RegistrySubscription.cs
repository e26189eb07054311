using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Polly;
using Polly.Retry;

namespace Registry.Client;

/// <summary>
/// A live subscription: a background long-poll loop that sends the version it holds and takes
/// what comes back. While the registry is unreachable it keeps serving the last answer and
/// retries with capped, jittered backoff. Dispose it to stop the loop.
/// </summary>
public sealed class RegistrySubscription : IAsyncDisposable
{
    private readonly RegistryTransport _transport;
    private readonly SubscriptionDocument _document;
    private readonly byte[] _body;
    private readonly TimeSpan _wait;
    private readonly TimeSpan _pause;
    private readonly AnswerCache? _cache;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ResiliencePipeline _retry;
    private readonly TaskCompletionSource<RegistryAnswer> _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stop = new();
    private readonly object _gate = new();
    private readonly List<Channel<RegistryAnswer>> _watchers = [];
    private CancellationTokenSource _changed = new();
    private RegistryAnswer? _current;
    private DateTimeOffset? _lastContact;
    private readonly OutageLog _outage;
    private Task _loop = Task.CompletedTask;
    private int _disposed;
    private string? _sentVersion;
    private long _sentAt;

    internal RegistrySubscription(
        RegistryTransport transport, SubscriptionDocument document, byte[] body, RegistryClientOptions options,
        AnswerCache? cache, TimeProvider time, ILogger logger)
    {
        _transport = transport;
        _document = document;
        _body = body;
        _wait = options.PollWait;
        _pause = options.RetryBaseDelay;
        _cache = cache;
        _time = time;
        _logger = logger;
        _outage = new OutageLog(_logger, "subscribe");
        _retry = Backoff.Create(options.RetryBaseDelay, options.RetryMaxDelay, time, _outage.OnRetry);
    }

    /// <summary>Raised on the loop's thread after each new answer (the first one too). A handler's exception is logged and ignored.</summary>
    public event EventHandler<RegistryAnswerChangedEventArgs>? Changed;

    /// <summary>What is watched.</summary>
    public IReadOnlyList<SubscriptionEntry> Entries => _document.Subscribes;

    /// <summary>The answer held now (the last one received, or the cached one); <see langword="null"/> before any.</summary>
    public RegistryAnswer? Current => Volatile.Read(ref _current);

    /// <summary>When a registry node last answered this subscription; <see langword="null"/> if none has yet.</summary>
    public DateTimeOffset? LastContact
    {
        get
        {
            lock (_gate)
            {
                return _lastContact;
            }
        }
    }

    /// <summary>The cache file of this subscription, when <see cref="RegistryClientOptions.CacheDirectory"/> is set.</summary>
    public string? CacheFile => _cache?.Path;

    /// <summary>Completes with the first answer: from the registry, or from the cache file when that came first.</summary>
    public Task<RegistryAnswer> WaitForFirstAnswerAsync(CancellationToken cancellationToken = default) =>
        _first.Task.WaitAsync(cancellationToken);

    /// <summary>A change token that fires on the next new answer (for <c>IChangeToken</c> consumers such as service discovery).</summary>
    public IChangeToken GetChangeToken()
    {
        lock (_gate)
        {
            return new CancellationChangeToken(_changed.Token);
        }
    }

    /// <summary>
    /// The current answer (when there is one) and then every new answer. A slow reader skips
    /// intermediate answers and gets the latest: each answer is the whole endpoint set.
    /// </summary>
    public async IAsyncEnumerable<RegistryAnswer> WatchAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var channel = Channel.CreateBounded<RegistryAnswer>(new BoundedChannelOptions(1)
        {
            FullMode = BoundedChannelFullMode.DropOldest,
            SingleReader = true,
        });
        lock (_gate)
        {
            if (_disposed != 0)
            {
                yield break;
            }

            _watchers.Add(channel);
            if (_current is not null)
            {
                channel.Writer.TryWrite(_current);
            }
        }

        try
        {
            await foreach (var answer in channel.Reader.ReadAllAsync(cancellationToken))
            {
                yield return answer;
            }
        }
        finally
        {
            lock (_gate)
            {
                _watchers.Remove(channel);
            }
        }
    }

    internal async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_cache is not null && await _cache.TryLoadAsync(_body, cancellationToken) is { } cached)
        {
            Accept(cached);
        }

        _loop = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
    }

    private async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            RegistryAnswer answer;
            try
            {
                answer = await _retry.ExecuteAsync(static (self, ct) => new ValueTask<RegistryAnswer>(self.PollOnceAsync(ct)), this, stop);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (RegistryClientException e)
            {
                // Only a refusal (400: the subscription itself is invalid) gets here; retrying cannot help.
                Log.Refused(_logger, "subscribe", e);
                _first.TrySetException(e);
                return;
            }

            lock (_gate)
            {
                _lastContact = _time.GetUtcNow();
            }

            _outage.Reached();

            if (string.Equals(answer.Version, _sentVersion, StringComparison.Ordinal) && _time.GetElapsedTime(_sentAt) < _wait / 2)
            {
                // The registry holds a poll whose version is current, so an unchanged answer at once means something
                // in between did not (a node shutting down, a proxy dropping the query): pause rather than spin.
                try
                {
                    await Task.Delay(_pause, _time, stop);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
            }

            if (Accept(answer) && _cache is not null)
            {
                // Not cancelled by a dispose that arrives meanwhile: a short local write that a later cold start depends on.
                await _cache.TryWriteAsync(_document, answer, CancellationToken.None);
            }
        }
    }

    private Task<RegistryAnswer> PollOnceAsync(CancellationToken cancellationToken)
    {
        _sentVersion = Current?.Version;
        _sentAt = _time.GetTimestamp();
        return _transport.SubscribeAsync(_body, _sentVersion, _wait, cancellationToken);
    }

    /// <summary>Takes an answer; <see langword="true"/> when it is new.</summary>
    private bool Accept(RegistryAnswer answer)
    {
        RegistryAnswer? previous;
        CancellationTokenSource changed;
        lock (_gate)
        {
            previous = _current;
            if (previous is not null && string.Equals(previous.Version, answer.Version, StringComparison.Ordinal))
            {
                return false;
            }

            Volatile.Write(ref _current, answer);
            foreach (var watcher in _watchers)
            {
                watcher.Writer.TryWrite(answer);
            }

            changed = _changed;
            _changed = new CancellationTokenSource();
        }

        _first.TrySetResult(answer);
        // Not disposed: a CancellationChangeToken handed out may still register on its token.
        changed.Cancel();
        var handlers = Changed;
        if (handlers is not null)
        {
            var args = new RegistryAnswerChangedEventArgs(previous, answer);
            foreach (EventHandler<RegistryAnswerChangedEventArgs> handler in handlers.GetInvocationList())
            {
                try
                {
                    handler(this, args);
                }
#pragma warning disable CA1031 // A subscriber's bug must not stop the subscription; it is logged.
                catch (Exception e)
#pragma warning restore CA1031
                {
                    Log.HandlerFailed(_logger, e);
                }
            }
        }

        return true;
    }

    /// <summary>Stops the loop and ends every <see cref="WatchAsync"/> enumeration.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync();
        await _loop;
        lock (_gate)
        {
            foreach (var watcher in _watchers)
            {
                watcher.Writer.TryComplete();
            }
        }

        _first.TrySetCanceled();
        _stop.Dispose();
    }
}
