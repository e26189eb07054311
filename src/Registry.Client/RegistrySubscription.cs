// Over 300 lines on purpose: the poll loop, the held answer and the watchers' completion are one state machine.
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Primitives;

namespace Registry.Client;

/// <summary>
/// A live subscription: a background long-poll loop that sends the version it holds and takes
/// what comes back. While the registry is unreachable it keeps serving the last answer and
/// retries with capped, jittered backoff; its loop ends only when the registry refuses the
/// subscription (see <see cref="State"/>) or when it is disposed.
/// </summary>
public sealed class RegistrySubscription : IAsyncDisposable
{
    private readonly RegistryTransport _transport;
    private readonly SubscriptionDocument _document;
    private readonly byte[] _body;
    private readonly TimeSpan _wait;
    /// <summary>How long a token created or revoked on one registry node takes to reach every node (the API's "within 1 s").</summary>
    private static readonly TimeSpan TokenPropagation = TimeSpan.FromSeconds(1);

    private readonly TimeSpan _pause;
    private readonly AnswerCache? _cache;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Backoff _backoff;
    private readonly TaskCompletionSource<RegistryAnswer> _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stop = new();
    private readonly object _gate = new();
    private readonly List<Channel<RegistryAnswer>> _watchers = [];
    private CancellationTokenSource _changed = new();
    private RegistryAnswer? _current;
    private DateTimeOffset? _lastContact;

    /// <summary>
    /// Up to when (a timestamp of the clock) the answer held is known to be the registry's: when a node last
    /// answered with its current state, or the time a stale node's answer dates from; at the start, what the cache
    /// file says. Null before any node answered (or a file said). Only the start and then the loop touch it.
    /// </summary>
    private long? _knownAt;
    private readonly OutageLog _outage;
    private Task _loop = Task.CompletedTask;
    private int _disposed;
    private RegistryConnectionState _state = RegistryConnectionState.Starting;
    private Exception? _lastError;

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
        _backoff = new Backoff(options.RetryBaseDelay, options.RetryMaxDelay);
        // A refusal is also delivered to watchers and Changed; the first-answer task may never be awaited (service
        // discovery does not), and its exception must not reach TaskScheduler.UnobservedTaskException.
        _ = _first.Task.ContinueWith(
            static first => _ = first.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>
    /// A subscription that holds <paramref name="answer"/> and never polls, for tests of code that receives
    /// subscriptions from a fake <see cref="IRegistryClient"/>.
    /// </summary>
    public static RegistrySubscription CreateFixed(IEnumerable<SubscriptionEntry> entries, RegistryAnswer answer)
    {
        ArgumentNullException.ThrowIfNull(entries);
        ArgumentNullException.ThrowIfNull(answer);
        var subscription = new RegistrySubscription(
            RegistryTransport.Unused(), new SubscriptionDocument([.. entries]), [], new RegistryClientOptions(), null, TimeProvider.System, NullLogger.Instance);
        subscription.Accept(answer);
        subscription.SetState(RegistryConnectionState.Connected, null);
        return subscription;
    }

    /// <summary>
    /// Raised on the loop's thread after each new answer (the first one too). A handler's exception is logged and ignored.
    /// A handler may start disposing the subscription or its client but must not block on that: disposing waits for the
    /// loop, which is running the handler.
    /// </summary>
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

    /// <summary>Where the background loop stands: connected, retrying an outage, refused (the loop has ended), stopped.</summary>
    public RegistryConnectionState State
    {
        get
        {
            lock (_gate)
            {
                return _state;
            }
        }
    }

    /// <summary>Why the last attempt failed (for <see cref="RegistryConnectionState.Refused"/>, the refusal); <see langword="null"/> once one succeeds.</summary>
    public Exception? LastError
    {
        get
        {
            lock (_gate)
            {
                return _lastError;
            }
        }
    }

    /// <summary>Completes when the background loop has ended: refused or disposed.</summary>
    internal Task Ended => _loop;

    /// <summary>The cache file of this subscription, when <see cref="RegistryClientOptions.CacheDirectory"/> is set.</summary>
    public string? CacheFile => _cache?.Path;

    /// <summary>
    /// Completes with the first answer: from the registry, or from the cache file when that came first. Fails with the
    /// <see cref="RegistryClientException"/> when the registry refuses the subscription before any answer.
    /// </summary>
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
    /// intermediate answers and gets the latest: each answer is the whole endpoint set. Ends when the subscription is
    /// disposed, and throws the <see cref="RegistryClientException"/> when the registry refuses it.
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

            if (_current is not null)
            {
                channel.Writer.TryWrite(_current);
            }

            if (_state == RegistryConnectionState.Refused)
            {
                channel.Writer.TryComplete(_lastError);
            }
            else
            {
                _watchers.Add(channel);
            }
        }

        try
        {
            await foreach (var answer in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
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

    /// <summary>
    /// Up to when the answer held is known to be the registry's (a timestamp of the client's clock); read once the
    /// subscription is disposed, by the one that replaces it.
    /// </summary>
    internal long? KnownAt => _knownAt;

    internal async Task StartAsync(long? knownAt, CancellationToken cancellationToken)
    {
        _knownAt = knownAt;
        if (_cache is not null && await _cache.TryLoadAsync(_body, cancellationToken).ConfigureAwait(false) is { } cached)
        {
            Accept(cached.Answer);
            // A restart during a failover must not take a stale node's answer older than the file's either.
            if (cached.KnownAt is { } fileKnownAt && TimestampAgo(_time.GetUtcNow() - fileKnownAt) is var fromFile && !(_knownAt > fromFile))
            {
                _knownAt = fromFile;
            }
        }

        _loop = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
    }

    private async Task RunAsync(CancellationToken stop)
    {
        var delay = TimeSpan.Zero;
        var unauthorized = 0;
        while (true)
        {
            try
            {
                await Task.Delay(delay, _time, stop).ConfigureAwait(false);
                var sentVersion = Current?.Version;
                var sentAt = _time.GetTimestamp();
                var (answer, staleAge, server) = await _transport.SubscribeAsync(_body, sentVersion, _wait, stop).ConfigureAwait(false);
                lock (_gate)
                {
                    _lastContact = _time.GetUtcNow();
                }

                // A node cut off from the database answers from memory as of when it was cut off. After a failover to
                // it, its answer may be older than the one held: taking it would bring back endpoints since gone, until
                // it caught up. It is left, and the next poll starts at the next server: an outage like any other (below),
                // backed off (a stale node answers such a poll at once: a fleet must not spin on it), told once, and seen in State.
                var datesFrom = TimestampAgo(staleAge ?? TimeSpan.Zero);
                if (staleAge is not null && _knownAt > datesFrom && !string.Equals(answer.Version, sentVersion, StringComparison.Ordinal))
                {
                    _transport.Avoid(server);
                    throw new RegistryUnavailableException(string.Create(CultureInfo.InvariantCulture,
                        $"A registry node cut off from its database answered {answer.Version} from memory {staleAge.Value.TotalSeconds:0} s old, older than the answer held; trying the next node."));
                }

                // Taken, but the next poll starts at the next node: this one hears of no change made through the
                // others while it is cut off, and a consumer with no writes of its own has nothing else to move it.
                if (staleAge is not null)
                {
                    _transport.Avoid(server);
                }

                unauthorized = 0;
                _backoff.Reset();
                _outage.Reached();
                SetState(RegistryConnectionState.Connected, null);
                // The registry holds a poll whose version is current, so an unchanged answer at once means something
                // in between did not (a node shutting down, a proxy dropping the query): pause rather than spin.
                delay = string.Equals(answer.Version, sentVersion, StringComparison.Ordinal) && _time.GetElapsedTime(sentAt) < _wait / 2
                    ? _pause
                    : TimeSpan.Zero;
                _knownAt = _knownAt > datesFrom ? _knownAt : datesFrom;
                var changed = Accept(answer);
                // Unchanged answers rewrite the file now and then, so it is not taken for one no subscription uses.
                if (_cache is not null && (changed || _cache.Due))
                {
                    // Not cancelled by a dispose that arrives meanwhile: a short local write that a later cold start depends on.
                    await _cache.TryWriteAsync(_document, answer, KnownAtByWallClock(), CancellationToken.None).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (RegistryAccessDeniedException e) when (e.IsAuthenticationFailure && unauthorized < (Current is null ? 1 : 2))
            {
                // A credential this node does not know yet or no more. A poll held with a token that was revoked or expired
                // meanwhile (a rotation: the token provider may give the new one already) is asked again at once; then, or
                // for a first poll, once more after the second a new token takes to reach every node. A 401 after that is
                // the end, as below.
                Log.Refused(_logger, "subscribe (asking again with the credential as it is now)", e);
                delay = unauthorized == 0 && Current is not null ? TimeSpan.Zero : Backoff.Jitter(TokenPropagation, TokenPropagation * 1.5);
                unauthorized++;
            }
            catch (RegistryClientException e)
            {
                // A refusal (400: the subscription is invalid; 401/403: the credential) is not something retrying changes.
                // Only the registry's own (with its problem document): a proxy's 408 or HTML 404 arrives as an outage.
                // Everyone waiting hears it rather than hanging: the first answer, every WatchAsync.
                Log.Refused(_logger, "subscribe", e);
                lock (_gate)
                {
                    _state = RegistryConnectionState.Refused;
                    _lastError = e;
                    foreach (var watcher in _watchers)
                    {
                        watcher.Writer.TryComplete(e);
                    }

                    _watchers.Clear();
                }

                _first.TrySetException(e);
                return;
            }
#pragma warning disable CA1031 // The loop must outlive anything a handler or the network throws; it is logged and retried.
            catch (Exception e)
#pragma warning restore CA1031
            {
                delay = _backoff.Next(e);
                _outage.Failed(e, _backoff.Failures, delay);
                SetState(RegistryConnectionState.Unavailable, e);
                await KeepCacheFreshAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Rewrites the cache file when it is due though no new answer was taken (an outage, or only stale nodes'
    /// older answers): it is what a restart then starts from, and must not be taken for one no subscription uses.
    /// </summary>
    private async Task KeepCacheFreshAsync()
    {
        if (_cache is { Due: true } && Current is { } held)
        {
            await _cache.TryWriteAsync(_document, held, KnownAtByWallClock(), CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>The timestamp of the clock <paramref name="ago"/> ago (now for a negative span: a wall clock set back).</summary>
    private long TimestampAgo(TimeSpan ago) =>
        _time.GetTimestamp() - (long)(Math.Max(0, ago.TotalSeconds) * _time.TimestampFrequency);

    /// <summary><see cref="_knownAt"/> by the wall clock, as the cache file keeps it for a later process.</summary>
    private DateTimeOffset? KnownAtByWallClock() =>
        _knownAt is { } knownAt ? _time.GetUtcNow() - _time.GetElapsedTime(knownAt) : null;

    private void SetState(RegistryConnectionState state, Exception? error)
    {
        lock (_gate)
        {
            if (_state is not RegistryConnectionState.Stopped and not RegistryConnectionState.Refused)
            {
                _state = state;
                _lastError = error;
            }
        }
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
        ChangeSignal.Fire(changed, _logger);

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

        await _stop.CancelAsync().ConfigureAwait(false);
        // The loop catches everything; awaiting it only waits for the poll in flight to end.
        await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        lock (_gate)
        {
            foreach (var watcher in _watchers)
            {
                watcher.Writer.TryComplete();
            }

            _watchers.Clear();
            if (_state != RegistryConnectionState.Refused)
            {
                _state = RegistryConnectionState.Stopped;
            }
        }

        _first.TrySetCanceled();
        _stop.Dispose();
    }
}
