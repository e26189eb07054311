using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Registry.Client.ServiceDiscovery;

namespace Registry.Client;

/// <summary>
/// The registry client: registers this process's instances and subscribes to providers.
/// One instance per process is enough; it is thread-safe. With dependency injection use
/// <c>services.AddRegistryClient(...)</c>; otherwise construct it with an <see cref="HttpClient"/>.
/// Disposing it stops the subscriptions the service-discovery provider keeps; leases and subscriptions
/// handed out are the caller's to dispose.
/// </summary>
public sealed class RegistryClient : IRegistryClient, IAsyncDisposable, IDisposable
{
    private readonly RegistryTransport _transport;
    private readonly RegistryClientOptions _options;
    private readonly TimeProvider _time;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _logger;
    private readonly Lazy<DiscoveryPool> _discovery;

    /// <summary>When the cache folder is next cleared of files no subscription uses (UTC ticks; 0: at the first subscription).</summary>
    private long _cacheSweepDueTicks;

    /// <summary>Creates a client that sends with a plain <see cref="HttpClient"/>.</summary>
    /// <param name="httpClient">
    /// The client to send with. Its <see cref="HttpClient.Timeout"/> must exceed <see cref="RegistryClientOptions.PollWait"/>
    /// plus a margin (the default 100 s does); the registry client applies its own per-request timeouts.
    /// </param>
    /// <param name="options">The settings; validated here.</param>
    /// <param name="loggerFactory">Where to log; none when <see langword="null"/>.</param>
    /// <param name="timeProvider">The clock for delays; the system clock when <see langword="null"/>.</param>
    public RegistryClient(HttpClient httpClient, RegistryClientOptions options, ILoggerFactory? loggerFactory = null, TimeProvider? timeProvider = null)
        : this(Fixed(httpClient), options, loggerFactory, timeProvider)
    {
    }

    /// <summary>Creates a client that sends with <paramref name="httpClientFactory"/>'s client named <paramref name="httpClientName"/>, created per request.</summary>
    /// <param name="httpClientFactory">The factory; its pooled handlers rotate, so the registry's DNS changes are seen.</param>
    /// <param name="httpClientName">The named client; set its <see cref="HttpClient.Timeout"/> as for the other constructor.</param>
    /// <param name="options">The settings; validated here.</param>
    /// <param name="loggerFactory">Where to log; none when <see langword="null"/>.</param>
    /// <param name="timeProvider">The clock for delays; the system clock when <see langword="null"/>.</param>
    public RegistryClient(
        IHttpClientFactory httpClientFactory, string httpClientName, RegistryClientOptions options, ILoggerFactory? loggerFactory = null, TimeProvider? timeProvider = null)
        : this(Named(httpClientFactory, httpClientName), options, loggerFactory, timeProvider)
    {
    }

    private RegistryClient(Func<HttpClient> http, RegistryClientOptions options, ILoggerFactory? loggerFactory, TimeProvider? timeProvider)
    {
        ArgumentNullException.ThrowIfNull(options);
        RegistryClientOptionsValidator.ThrowIfInvalid(options);
        _options = options;
        _time = timeProvider ?? TimeProvider.System;
        _loggers = loggerFactory ?? NullLoggerFactory.Instance;
        _logger = _loggers.CreateLogger<RegistryClient>();
        _transport = new RegistryTransport(http, options.Servers, options.TokenProvider, _time, _loggers.CreateLogger<RegistryTransport>(), options.Token);
        _discovery = new Lazy<DiscoveryPool>(() => new DiscoveryPool(this, _transport, options, _time, _loggers.CreateLogger<DiscoveryPool>()));
    }

    /// <summary>The subscriptions the service-discovery provider shares, created on first use.</summary>
    internal DiscoveryPool Discovery => _discovery.Value;

    internal RegistryClientOptions Options => _options;

    /// <summary>
    /// Registers an instance and keeps it registered until the returned lease is disposed. The first
    /// attempt is made before this returns: a refusal (e.g. invalid input) throws
    /// <see cref="RegistryClientException"/>; an unreachable registry does not throw — the lease keeps trying in the background.
    /// </summary>
    public Task<RegistrationLease> RegisterAsync(ProviderInstance instance, CancellationToken cancellationToken = default) =>
        RegisterAsync(instance, RegistrationMode.Heartbeat, cancellationToken);

    /// <summary>
    /// Registers an instance kept alive the way <paramref name="mode"/> says: <see cref="RegistrationMode.Heartbeat"/>,
    /// <see cref="RegistrationMode.Session"/> (the first attempt waits for the session's lease) or
    /// <see cref="RegistrationMode.Probe(ProbeKind, string?, TimeSpan?)"/>. Failures behave as for
    /// <see cref="RegisterAsync(ProviderInstance, CancellationToken)"/>.
    /// </summary>
    public async Task<RegistrationLease> RegisterAsync(ProviderInstance instance, RegistrationMode mode, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(instance);
        ArgumentNullException.ThrowIfNull(mode);
        var lease = new RegistrationLease(_transport, instance, _options, _time, _loggers.CreateLogger<RegistrationLease>(), mode);
        try
        {
            await lease.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // Refused or cancelled before it started: its resources are released (and a registration that was in flight unregistered).
            await lease.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return lease;
    }

    /// <summary>
    /// Starts a subscription to the union of the entries' matches. Returns at once, with the cached answer when
    /// <see cref="RegistryClientOptions.CacheDirectory"/> holds one; await <see cref="RegistrySubscription.WaitForFirstAnswerAsync"/>
    /// for the first answer. Dispose the subscription to stop it.
    /// </summary>
    public Task<RegistrySubscription> SubscribeAsync(IEnumerable<SubscriptionEntry> subscribes, CancellationToken cancellationToken = default) =>
        SubscribeAsync(subscribes, knownAt: null, cancellationToken);

    /// <summary>
    /// Starts a subscription that takes over from one it replaces, which knew the registry's state up to
    /// <paramref name="knownAt"/> (see <see cref="RegistrySubscription.KnownAt"/>): a stale node's older answer is
    /// no more taken by the new one than it was by the old.
    /// </summary>
    internal async Task<RegistrySubscription> SubscribeAsync(IEnumerable<SubscriptionEntry> subscribes, long? knownAt, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(subscribes);
        var entries = subscribes.ToArray();
        if (entries.Length == 0)
        {
            throw new ArgumentException("A subscription needs at least one entry.", nameof(subscribes));
        }

        var document = new SubscriptionDocument(entries);
        var body = JsonSerializer.SerializeToUtf8Bytes(document, ClientJson.Default.SubscriptionDocument);
        var cache = string.IsNullOrEmpty(_options.CacheDirectory)
            ? null
            : new AnswerCache(AnswerCache.PathFor(_options.CacheDirectory, body), _time, _logger);
        var subscription = new RegistrySubscription(_transport, document, body, _options, cache, _time, _loggers.CreateLogger<RegistrySubscription>());
        try
        {
            await subscription.StartAsync(knownAt, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await subscription.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        ForgetUnusedCacheFiles();
        return subscription;
    }

    /// <summary>
    /// Deletes the cache files no subscription has written for <see cref="RegistryClientOptions.CacheRetention"/>, at
    /// the first subscription and then at most every quarter of it (running subscriptions rewrite theirs far more often).
    /// </summary>
    private void ForgetUnusedCacheFiles()
    {
        var now = _time.GetUtcNow();
        var due = Interlocked.Read(ref _cacheSweepDueTicks);
        if (string.IsNullOrEmpty(_options.CacheDirectory) || now.UtcTicks < due
            || Interlocked.CompareExchange(ref _cacheSweepDueTicks, (now + _options.CacheRetention / 4).UtcTicks, due) != due)
        {
            return;
        }

        AnswerCache.ForgetUnused(_options.CacheDirectory, now - _options.CacheRetention, _logger);
    }

    /// <summary>Starts a subscription to one provider; see <see cref="SubscribeAsync(IEnumerable{SubscriptionEntry}, CancellationToken)"/>.</summary>
    public Task<RegistrySubscription> SubscribeAsync(SubscriptionEntry entry, CancellationToken cancellationToken = default) =>
        SubscribeAsync([entry], cancellationToken);

    /// <inheritdoc />
    public Task<RegistryAnswer?> GetServiceAsync(string application, string? ifNoneMatch = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(application);
        return _transport.GetServiceAsync(application, ifNoneMatch, _options.RequestTimeout, cancellationToken);
    }

    /// <summary>Stops the subscriptions kept for service discovery.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_discovery.IsValueCreated)
        {
            await _discovery.Value.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Starts stopping the subscriptions kept for service discovery without waiting for their polls to end (for
    /// containers disposed synchronously); prefer <see cref="DisposeAsync"/>.
    /// </summary>
    public void Dispose() => _ = DisposeAsync().AsTask();

    private static Func<HttpClient> Fixed(HttpClient httpClient)
    {
        ArgumentNullException.ThrowIfNull(httpClient);
        return () => httpClient;
    }

    private static Func<HttpClient> Named(IHttpClientFactory httpClientFactory, string httpClientName)
    {
        ArgumentNullException.ThrowIfNull(httpClientFactory);
        ArgumentNullException.ThrowIfNull(httpClientName);
        return () => httpClientFactory.CreateClient(httpClientName);
    }
}
