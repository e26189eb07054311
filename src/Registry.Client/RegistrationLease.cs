// Over 300 lines on purpose: the lease's loop, its state and the race between a registration in flight and dispose are read together.
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Registry.Client;

/// <summary>
/// A registration that keeps itself alive: heartbeats at about a third of the TTL (with jitter),
/// registers again when the registry has forgotten the instance, keeps trying with capped,
/// jittered backoff while the registry is down, and unregisters on dispose. Its loop never ends
/// on an error: it logs, backs off and tries again until the lease is disposed. Other
/// <see cref="RegistrationMode"/>s hold a session instead of heartbeating, or register once for
/// the registry to probe.
/// </summary>
public sealed partial class RegistrationLease : IAsyncDisposable
{
    private readonly RegistryTransport _transport;
    private readonly int _requestedTtl;
    private readonly TimeSpan _requestTimeout;
    private readonly TimeSpan _retryBaseDelay;
    private readonly TimeSpan _retryMaxDelay;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Backoff _backoff;
    private readonly OutageLog _outage;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _gate = new();
    private Task _loop = Task.CompletedTask;
    private bool _registered;
    // A register was sent and not refused since: it may have committed even if no answer came back.
    private bool _mayBeRegistered;
    // A session lease's drain is under way: the loop holds the open session, opens no other, and ends with it.
    private bool _draining;
    private TimeSpan _ttl;
    private DateTimeOffset? _expiresAt;
    // When the registry last granted the lease, on this process's monotonic clock (the registry's clock is not ours).
    private long? _renewedAt;
    private RegistryConnectionState _state = RegistryConnectionState.Starting;
    private Exception? _lastError;
    private int _disposed;

    internal RegistrationLease(RegistryTransport transport, ProviderInstance instance, RegistryClientOptions options, TimeProvider time, ILogger logger, RegistrationMode? mode = null)
    {
        _transport = transport;
        Instance = instance;
        Mode = mode ?? RegistrationMode.Heartbeat;
        _sessionIdleTimeout = options.SessionIdleTimeout;
        _requestedTtl = (int)Math.Ceiling(options.Ttl.TotalSeconds);
        _ttl = TimeSpan.FromSeconds(_requestedTtl);
        _requestTimeout = options.RequestTimeout;
        _retryBaseDelay = options.RetryBaseDelay;
        _retryMaxDelay = options.RetryMaxDelay;
        _time = time;
        _logger = logger;
        // While down, retry at least every third of the TTL, so a registry that comes back sees the renewal before the lease runs out.
        var cap = TimeSpan.FromTicks(Math.Max(options.RetryBaseDelay.Ticks, Math.Min(options.RetryMaxDelay.Ticks, _ttl.Ticks / 3)));
        _outage = new OutageLog(_logger, "registration");
        _backoff = new Backoff(options.RetryBaseDelay, cap);
    }

    /// <summary>
    /// A lease that reports <paramref name="instance"/> registered with <paramref name="ttl"/> and never sends anything
    /// (nor unregisters), for tests of code that receives leases from a fake <see cref="IRegistryClient"/>.
    /// </summary>
    public static RegistrationLease CreateFixed(ProviderInstance instance, TimeSpan ttl)
    {
        ArgumentNullException.ThrowIfNull(instance);
        var lease = new RegistrationLease(RegistryTransport.Unused(), instance, new RegistryClientOptions { Ttl = ttl }, TimeProvider.System, NullLogger.Instance);
        var seconds = (int)Math.Ceiling(ttl.TotalSeconds);
        lease.Accept(new LeaseDocument(seconds, TimeProvider.System.GetUtcNow().AddSeconds(seconds)), quiet: true);
        lease.SetState(RegistryConnectionState.Connected, null);
        return lease;
    }

    /// <summary>The registered instance.</summary>
    public ProviderInstance Instance { get; }

    /// <summary>How the instance is kept registered.</summary>
    public RegistrationMode Mode { get; }

    /// <summary>Whether the registry acknowledged the instance and has not since answered that it forgot it.</summary>
    public bool IsRegistered
    {
        get
        {
            lock (_gate)
            {
                return _registered;
            }
        }
    }

    /// <summary>Where the background loop stands: connected, retrying an outage, refused, stopped.</summary>
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

    /// <summary>Why the last attempt failed; <see langword="null"/> once one succeeds.</summary>
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

    /// <summary>The lease the registry granted (the requested one until it answers).</summary>
    public TimeSpan Ttl
    {
        get
        {
            lock (_gate)
            {
                return _ttl;
            }
        }
    }

    /// <summary>When the lease runs out unless renewed, as the registry last said.</summary>
    public DateTimeOffset? ExpiresAt
    {
        get
        {
            lock (_gate)
            {
                return _expiresAt;
            }
        }
    }

    /// <summary>The first registration: one attempt over every node. Failures other than a refusal are left to the background loop.</summary>
    internal async Task StartAsync(CancellationToken cancellationToken)
    {
        var firstDelay = TimeSpan.Zero;
        try
        {
            firstDelay = await AttemptAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RegistryClientException && !(e is OperationCanceledException && cancellationToken.IsCancellationRequested))
        {
            // Unreachable, a timeout, or anything an app-wide HTTP handler threw: the process still wants to be found.
            Log.RegisterDeferred(_logger, Instance, e.Message);
            _outage.Begun();
            firstDelay = Failed(e);
        }

        _loop = Task.Run(() => RunAsync(firstDelay, _stop.Token), CancellationToken.None);
    }

    private async Task RunAsync(TimeSpan delay, CancellationToken stop)
    {
        while (true)
        {
            try
            {
                await Task.Delay(delay, _time, stop).ConfigureAwait(false);
                delay = await AttemptAsync(stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (RegistryClientException e)
            {
                // A refusal (400, 401, 403) is not transient, but the process still wants to be found and a token may be
                // rotated: say so loudly and try again much later, at a jittered pace so a fleet does not retry in step.
                delay = Backoff.Jitter(_retryMaxDelay * 0.8, _retryMaxDelay * 1.2);
                lock (_gate)
                {
                    // A heartbeat's 401 (a rotation: the new token not yet on that node, the old one revoked a moment
                    // early) leaves the lease running: asked again within it, as a heartbeat, it is not lost meanwhile;
                    // no sooner than RetryBaseDelay, so a token revoked for good is not asked ever faster to the end.
                    if (e is RegistryAccessDeniedException { IsAuthenticationFailure: true } && LeaseLeftLocked() is { } left && left > TimeSpan.Zero)
                    {
                        var within = left / 2 > _retryBaseDelay ? left / 2 : _retryBaseDelay;
                        delay = within < delay ? within : delay;
                    }
                    else
                    {
                        _registered = false;
                    }
                }

                Log.RefusedRetrying(_logger, "register", delay, e);
                SetState(RegistryConnectionState.Refused, e);
            }
#pragma warning disable CA1031 // The loop must outlive anything a handler or the network throws; it is logged and retried.
            catch (Exception e)
#pragma warning restore CA1031
            {
                delay = Failed(e);
                _outage.Failed(e, _backoff.Failures, delay);
            }
        }
    }

    /// <summary>One register or heartbeat (or a session's step); the delay until the next one.</summary>
    private async Task<TimeSpan> AttemptAsync(CancellationToken cancellationToken)
    {
        if (Mode.Kind == RegistrationKind.Session)
        {
            return await SessionStepAsync(cancellationToken).ConfigureAwait(false);
        }

        if (!IsRegistered)
        {
            lock (_gate)
            {
                _mayBeRegistered = true;
            }

            LeaseDocument lease;
            try
            {
                lease = await _transport.RegisterAsync(Instance, _requestedTtl, _requestTimeout, cancellationToken, Mode.RegisterQuery()).ConfigureAwait(false);
            }
            catch (RegistryClientException)
            {
                lock (_gate)
                {
                    _mayBeRegistered = false;
                }

                throw;
            }

            Accept(lease);
            Succeeded();
            // A probed instance is the registry's to keep alive: nothing more to send.
            return Mode.Kind == RegistrationKind.Probe ? Timeout.InfiniteTimeSpan : NextHeartbeat();
        }

        var renewed = await _transport.HeartbeatAsync(Instance, HeartbeatTimeout, cancellationToken).ConfigureAwait(false);
        Succeeded();
        if (renewed is null)
        {
            Log.HeartbeatNotFound(_logger, Instance);
            lock (_gate)
            {
                _registered = false;
            }

            return TimeSpan.Zero;
        }

        Accept(renewed, quiet: true);
        return NextHeartbeat();
    }

    private void Succeeded(bool resetBackoff = true)
    {
        if (resetBackoff)
        {
            _backoff.Reset();
        }

        _outage.Reached();
        SetState(RegistryConnectionState.Connected, null);
    }

    /// <summary>Records a transient failure; the delay before the next attempt.</summary>
    private TimeSpan Failed(Exception error)
    {
        SetState(RegistryConnectionState.Unavailable, error);
        return _backoff.Next(error, RenewalCeiling());
    }

    /// <summary>
    /// While a lease may still be alive, the next attempt must come well before it runs out, whatever a
    /// <c>Retry-After</c> asked: half the time left, so there is room for one more try after it. Once it has run out
    /// as far as this client knows (an outage longer than the TTL), at the heartbeat's own pace: soon enough to renew it
    /// within the grace the registry gives leases after an outage, and no faster than a fleet heartbeats anyway.
    /// </summary>
    private TimeSpan? RenewalCeiling()
    {
        lock (_gate)
        {
            return LeaseLeftLocked() switch
            {
                null => null,
                { } left when left > TimeSpan.Zero => left / 2,
                // A broken session's lease is gone by now: nothing to hurry for.
                _ => _registered ? _ttl / 3 : null,
            };
        }
    }

    /// <summary>
    /// How long the lease has left as far as this client knows (negative once run out), under the gate; null when it
    /// is known gone or was never granted. A session's stream that broke leaves its lease running at its node until
    /// the TTL (a node that died), so the next open must come within it too.
    /// </summary>
    private TimeSpan? LeaseLeftLocked() =>
        _registered && _renewedAt is { } renewedAt ? _ttl - _time.GetElapsedTime(renewedAt)
        : _brokenAt is { } brokenAt ? _ttl - _time.GetElapsedTime(brokenAt)
        : null;

    private void SetState(RegistryConnectionState state, Exception? error)
    {
        lock (_gate)
        {
            if (_state != RegistryConnectionState.Stopped)
            {
                _state = state;
                _lastError = error;
            }
        }
    }

    /// <summary>
    /// How long a heartbeat waits for each node: <see cref="RegistryClientOptions.RequestTimeout"/>, but no more than a
    /// third of the TTL, so that a node that hangs leaves the next one time to renew a short lease (3 s, say) before it runs out.
    /// </summary>
    private TimeSpan HeartbeatTimeout => Ttl / 3 is var third && third < _requestTimeout ? third : _requestTimeout;

    /// <summary>About a third of the TTL, less up to a fifth of that at random, so a fleet's heartbeats spread out.</summary>
    private TimeSpan NextHeartbeat() => Backoff.Jitter(Ttl / 3 * 0.8, Ttl / 3);

    private void Accept(LeaseDocument lease, bool quiet = false)
    {
        lock (_gate)
        {
            // With the state, under one lock: whoever sees IsRegistered sees Connected too.
            _registered = true;
            if (_state != RegistryConnectionState.Stopped)
            {
                _state = RegistryConnectionState.Connected;
                _lastError = null;
            }

            _ttl = TimeSpan.FromSeconds(lease.Ttl);
            _expiresAt = lease.Expires;
            _renewedAt = _time.GetTimestamp();
            _brokenAt = null;
        }

        if (!quiet)
        {
            Log.Registered(_logger, Instance, lease.Ttl);
        }
    }

    /// <summary>
    /// Stops heartbeating and unregisters: one attempt over every node, sent whenever a registration may have
    /// committed (a <c>404</c> costs nothing). Never throws; if the unregister fails, the lease expires on its own.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        // Once: after a drain (or with one under way) there is nothing more to do here.
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        var mayBeRegistered = await StopLoopAsync().ConfigureAwait(false);
        // A session's connection closes first: its node removes the instance; the unregister makes sure.
        CloseSession();
        if (mayBeRegistered)
        {
            await UnregisterAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Stops heartbeating, removes the instance and waits until every consumer that watched it, on any registry
    /// node, has been sent an answer without it, or until <paramref name="timeout"/> (rounded up to whole seconds,
    /// 1 to 60) runs out; then the provider can stop serving knowing consumers have moved away. The lease is over
    /// afterwards (disposing it sends nothing more). If the drain request fails or is cancelled, the instance is
    /// unregistered plainly (or left to expire) and the error is thrown. A session is held until the drain is answered, then closed.
    /// </summary>
    /// <exception cref="RegistryClientException">The registry refused the drain.</exception>
    /// <exception cref="HttpRequestException">No registry node could be reached.</exception>
    public async Task<DrainResult> DrainAsync(TimeSpan timeout, CancellationToken cancellationToken = default)
    {
        if (timeout <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "A drain needs a positive timeout.");
        }

        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return DrainResult.NotRegistered;
        }

        // A session stays open through the drain: closing it would remove the instance without one (and the drain would
        // find nothing). Its loop goes on holding it, opens no other, and takes the session's end (the drain's) as final.
        // Any other lease stops its loop first, so no heartbeat or registration crosses the drain.
        var stopped = false;
        try
        {
            var mayBeRegistered = false;
            var holding = false;
            if (Mode.Kind == RegistrationKind.Session)
            {
                lock (_gate)
                {
                    // Between sessions (its node stopped), an open in flight would register the instance again behind the
                    // drain's removal: then the loop stops first, as in the other modes.
                    holding = _draining = _registered;
                    mayBeRegistered = _mayBeRegistered;
                }
            }

            if (!holding)
            {
                mayBeRegistered = await StopLoopAsync().ConfigureAwait(false);
                stopped = true;
            }

            if (!mayBeRegistered)
            {
                return DrainResult.NotRegistered;
            }

            var seconds = (int)Math.Clamp(Math.Ceiling(timeout.TotalSeconds), 1, 60);
            try
            {
                // Each node tried may hold the request for the whole drain.
                var result = await _transport.DrainAsync(Instance, seconds, TimeSpan.FromSeconds(seconds) + _requestTimeout, cancellationToken).ConfigureAwait(false)
                    ?? DrainResult.NotRegistered;
                Log.Drained(_logger, Instance, result.Delivered, result.Pending, result.Nodes, result.Complete);
                return result;
            }
            catch (Exception e)
            {
                // Cancelled too (a host's shutdown token): the wait for consumers is cut, the removal is not.
                Log.DrainFailed(_logger, Instance, e.Message);
                if (!stopped)
                {
                    // Closing the session removes the instance; the unregister makes sure, unless
                    // another registration took the instance over meanwhile (then it is theirs).
                    mayBeRegistered = await StopLoopAsync().ConfigureAwait(false);
                    stopped = true;
                    CloseSession();
                }

                if (mayBeRegistered)
                {
                    await UnregisterAsync().ConfigureAwait(false);
                }

                throw;
            }
        }
        finally
        {
            if (!stopped)
            {
                await StopLoopAsync().ConfigureAwait(false);
            }

            CloseSession();
        }
    }

    /// <summary>
    /// Ends the loop (called once, by whichever of dispose and drain set <see cref="_disposed"/>); whether a registration
    /// may have committed (so the instance is to be removed).
    /// </summary>
    private async Task<bool> StopLoopAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        // The loop catches everything; awaiting it only waits for the attempt in flight to end.
        await _loop.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        _stop.Dispose();
        lock (_gate)
        {
            _registered = false;
            _state = RegistryConnectionState.Stopped;
            return _mayBeRegistered;
        }
    }

    private async Task UnregisterAsync()
    {
        try
        {
            if (await _transport.UnregisterAsync(Instance, _requestTimeout, CancellationToken.None).ConfigureAwait(false))
            {
                Log.Unregistered(_logger, Instance);
            }
            else
            {
                Log.NotRegistered(_logger, Instance);
            }
        }
#pragma warning disable CA1031 // Disposal must finish: whatever failed, the lease runs out on its own; it is logged.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.UnregisterFailed(_logger, Instance, e.Message);
        }
    }
}
