using Microsoft.Extensions.Logging;
using Polly;
using Polly.Retry;

namespace Registry.Client;

/// <summary>
/// A registration that keeps itself alive: heartbeats at about a third of the TTL (with jitter),
/// registers again when the registry has forgotten the instance, keeps trying with capped,
/// jittered backoff while the registry is down, and unregisters on dispose.
/// </summary>
public sealed class RegistrationLease : IAsyncDisposable
{
    private readonly RegistryTransport _transport;
    private readonly int _requestedTtl;
    private readonly TimeSpan _requestTimeout;
    private readonly TimeSpan _retryMaxDelay;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ResiliencePipeline _retry;
    private readonly CancellationTokenSource _stop = new();
    private readonly object _gate = new();
    private Task _loop = Task.CompletedTask;
    private bool _registered;
    private bool _everRegistered;
    private readonly OutageLog _outage;
    private TimeSpan _ttl;
    private DateTimeOffset? _expiresAt;
    private int _disposed;

    internal RegistrationLease(RegistryTransport transport, ProviderInstance instance, RegistryClientOptions options, TimeProvider time, ILogger logger)
    {
        _transport = transport;
        Instance = instance;
        _requestedTtl = (int)Math.Ceiling(options.Ttl.TotalSeconds);
        _ttl = TimeSpan.FromSeconds(_requestedTtl);
        _requestTimeout = options.RequestTimeout;
        _retryMaxDelay = options.RetryMaxDelay;
        _time = time;
        _logger = logger;
        // While down, retry at least every third of the TTL, so a registry that comes back sees the renewal before the lease runs out.
        var cap = TimeSpan.FromTicks(Math.Max(options.RetryBaseDelay.Ticks, Math.Min(options.RetryMaxDelay.Ticks, _ttl.Ticks / 3)));
        _outage = new OutageLog(_logger, "registration");
        _retry = Backoff.Create(options.RetryBaseDelay, cap, time, _outage.OnRetry);
    }

    /// <summary>The registered instance.</summary>
    public ProviderInstance Instance { get; }

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

    /// <summary>The first registration: one attempt over every node. Transient failures are left to the background loop.</summary>
    internal async Task StartAsync(CancellationToken cancellationToken)
    {
        try
        {
            Accept(await _transport.RegisterAsync(Instance, _requestedTtl, _requestTimeout, cancellationToken));
        }
        catch (RegistryUnavailableException e)
        {
            Log.RegisterDeferred(_logger, Instance, e.Message);
            _outage.Failed();
        }

        _loop = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
    }

    private async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                if (!IsRegistered)
                {
                    var lease = await _retry.ExecuteAsync(
                        static (self, ct) => new ValueTask<LeaseDocument>(self._transport.RegisterAsync(self.Instance, self._requestedTtl, self._requestTimeout, ct)),
                        this,
                        stop);
                    _outage.Reached();
                    Accept(lease);
                    continue;
                }

                await Task.Delay(NextHeartbeat(), _time, stop);
                var renewed = await _retry.ExecuteAsync(
                    static (self, ct) => new ValueTask<LeaseDocument?>(self._transport.HeartbeatAsync(self.Instance, self._requestTimeout, ct)),
                    this,
                    stop);
                _outage.Reached();
                if (renewed is null)
                {
                    Log.HeartbeatNotFound(_logger, Instance);
                    lock (_gate)
                    {
                        _registered = false;
                    }
                }
                else
                {
                    Accept(renewed, quiet: true);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (RegistryClientException e)
            {
                // A refusal (e.g. 400) is not transient, but the process still wants to be found: say so loudly and try again much later.
                Log.Refused(_logger, "register", e);
                lock (_gate)
                {
                    _registered = false;
                }

                try
                {
                    await Task.Delay(_retryMaxDelay, _time, stop);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    return;
                }
            }
        }
    }

    /// <summary>About a third of the TTL, less up to a fifth of that at random, so a fleet's heartbeats spread out.</summary>
    private TimeSpan NextHeartbeat()
    {
#pragma warning disable CA5394 // Jitter, not security.
        var jitter = 1 - (Random.Shared.NextDouble() / 5);
#pragma warning restore CA5394
        return Ttl / 3 * jitter;
    }

    private void Accept(LeaseDocument lease, bool quiet = false)
    {
        lock (_gate)
        {
            _registered = true;
            _everRegistered = true;
            _ttl = TimeSpan.FromSeconds(lease.Ttl);
            _expiresAt = lease.Expires;
        }

        if (!quiet)
        {
            Log.Registered(_logger, Instance, lease.Ttl);
        }
    }

    /// <summary>Stops heartbeating and unregisters (one attempt over every node; if it fails, the lease expires on its own).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
        bool everRegistered;
        lock (_gate)
        {
            everRegistered = _everRegistered;
            _registered = false;
        }

        if (!everRegistered)
        {
            return;
        }

        try
        {
            await _transport.UnregisterAsync(Instance, _requestTimeout, CancellationToken.None);
            Log.Unregistered(_logger, Instance);
        }
        catch (RegistryClientException e)
        {
            Log.UnregisterFailed(_logger, Instance, e.Message);
        }
    }
}
