using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Primitives;
using Microsoft.Extensions.ServiceDiscovery;

namespace Registry.Client.ServiceDiscovery;

/// <summary>
/// Creates a <see cref="RegistryServiceEndpointProvider"/> for service names that can be registered applications:
/// never <c>localhost</c>, an IP address or a registry server's own host name (resolving the registry through itself
/// only stalls), and only names of <see cref="RegistryClientOptions.DiscoveryApplications"/> when that is set.
/// </summary>
internal sealed class RegistryServiceEndpointProviderFactory(
    RegistryClient client, IOptions<ServiceDiscoveryOptions> discoveryOptions, TimeProvider time, ILoggerFactory? loggers = null)
    : IServiceEndpointProviderFactory
{
    private readonly ILogger _logger = (loggers ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance).CreateLogger<RegistryServiceEndpointProvider>();

    public bool TryCreateProvider(ServiceEndpointQuery query, [NotNullWhen(true)] out IServiceEndpointProvider? provider)
    {
        var options = client.Options;
        var name = query.ServiceName;
        provider = null;
        if (!IsApplicationName(name)
            || string.Equals(name, "localhost", StringComparison.OrdinalIgnoreCase)
            || IPAddress.TryParse(name, out _)
            || options.Servers.Any(s => string.Equals(s.Host, name, StringComparison.OrdinalIgnoreCase)))
        {
            return false;
        }

        var listed = options.DiscoveryApplications.Count > 0;
        if (listed && !options.DiscoveryApplications.Any(pattern => Matches(pattern, name)))
        {
            return false;
        }

        // A name listed exactly is watched as the list spells it, without asking the registry (which may be down).
        var spelled = options.DiscoveryApplications.FirstOrDefault(pattern => !pattern.EndsWith('*') && string.Equals(pattern, name, StringComparison.OrdinalIgnoreCase));
        provider = new RegistryServiceEndpointProvider(client.Discovery, query, discoveryOptions.Value, options, checkRegistered: !listed, spelled, time, _logger);
        return true;
    }

    // Without regard to case: the name comes from a URI's host, which .NET lowercases (see DiscoveryPool.LookUpAsync).
    private static bool Matches(string pattern, string name) =>
        pattern == "*"
        || (pattern.EndsWith('*') ? name.StartsWith(pattern[..^1], StringComparison.OrdinalIgnoreCase) : string.Equals(pattern, name, StringComparison.OrdinalIgnoreCase));

    // The registry's name rule: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$
    private static bool IsApplicationName(string name) =>
        name.Length is > 0 and <= 128
        && char.IsAsciiLetterOrDigit(name[0])
        && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');
}

/// <summary>
/// Resolves a service name to the instances of the registered application of that name, through the client's
/// pooled subscriptions. Like the configuration provider: the most preferred scheme of the query that any instance
/// serves wins (<c>https+http://name</c>), schemes outside <see cref="ServiceDiscoveryOptions.AllowedSchemes"/> are
/// dropped, and an endpoint name (<c>http://_grpc.name</c>) selects the instances of that protocol. The change token
/// refreshes the resolver on every change of this application; an outage keeps the last endpoints.
/// </summary>
internal sealed partial class RegistryServiceEndpointProvider : IServiceEndpointProvider, IHostNameFeature
{
    private readonly DiscoveryPool _pool;
    private readonly ServiceEndpointQuery _query;
    private readonly RegistryClientOptions _options;
    private readonly bool _checkRegistered;
    private readonly string? _spelled;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly string[] _schemes;
    private readonly bool _anyScheme;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private ApplicationWatch? _watch;

    public RegistryServiceEndpointProvider(
        DiscoveryPool pool, ServiceEndpointQuery query, ServiceDiscoveryOptions discovery, RegistryClientOptions options, bool checkRegistered, string? spelled,
        TimeProvider time, ILogger logger)
    {
        _pool = pool;
        _query = query;
        _options = options;
        _checkRegistered = checkRegistered;
        _spelled = spelled;
        _time = time;
        _logger = logger;
        _anyScheme = discovery.AllowAllSchemes && query.IncludedSchemes.Count == 0;
        _schemes = query.IncludedSchemes.Count == 0
            ? [.. discovery.AllowedSchemes]
            : [.. query.IncludedSchemes.Where(s => discovery.AllowAllSchemes || discovery.AllowedSchemes.Contains(s, StringComparer.OrdinalIgnoreCase))];
    }

    string IHostNameFeature.HostName => _query.ServiceName;

    public async ValueTask PopulateAsync(IServiceEndpointBuilder endpoints, CancellationToken cancellationToken)
    {
        // An earlier provider (an override) resolved the name already.
        if (endpoints.Endpoints.Count != 0)
        {
            return;
        }

        var watch = await WatchAsync(cancellationToken).ConfigureAwait(false);
        if (watch is null)
        {
            // Not a registered application now: the next provider resolves the name. Asked again after a poll's wait,
            // so an application registered later is found.
            endpoints.AddChangeToken(Later());
            return;
        }

        // Taken before reading the endpoints, so a change between the two is not missed.
        var changed = watch.GetChangeToken();
        try
        {
            await watch.FirstAnswer.WaitAsync(_options.DiscoveryTimeout, _time, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Nothing known yet: resolve nothing now; the change token refreshes when the first answer arrives.
            endpoints.AddChangeToken(changed);
            return;
        }

        if (watch.Failure is { } failure)
        {
            // Asked again after a poll's wait only: the refusal fired the watch's token, which would have every request
            // for the name resolve, and subscribe, again at once.
            LogRefused(_logger, _query.ServiceName, failure.Message);
            await ForgetAsync(watch).ConfigureAwait(false);
            endpoints.AddChangeToken(Later());
            return;
        }

        endpoints.AddChangeToken(changed);
        foreach (var endpoint in Select(watch.Endpoints ?? []))
        {
            endpoints.Endpoints.Add(endpoint);
        }
    }

    private async Task<ApplicationWatch?> WatchAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _watch) is { } existing)
        {
            return existing;
        }

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_watch is not null)
            {
                return _watch;
            }

            // Only a name the registry lists is watched; when the registry cannot say (down, or a credential that may not
            // list everything), subscribing is how to find out, and a cached answer may be all there is.
            var application = _spelled;
            if (application is null)
            {
                (var listed, application) = await _pool.LookUpAsync(_query.ServiceName, cancellationToken).ConfigureAwait(false);
                if (_checkRegistered && listed == false)
                {
                    return null;
                }
            }

            return _watch = _pool.Acquire(application);
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task ForgetAsync(ApplicationWatch watch)
    {
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (ReferenceEquals(_watch, watch))
            {
                _watch = null;
                _pool.Release(watch);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private CancellationChangeToken Later() =>
        new(new CancellationTokenSource(_options.PollWait, _time).Token);

    private IEnumerable<ServiceEndpoint> Select(IReadOnlyList<ProviderInstance> instances)
    {
        IEnumerable<ProviderInstance> chosen;
        if (!string.IsNullOrEmpty(_query.EndpointName))
        {
            chosen = instances.Where(i => string.Equals(i.Protocol, _query.EndpointName, StringComparison.OrdinalIgnoreCase));
        }
        else if (_anyScheme)
        {
            chosen = instances;
        }
        else
        {
            // The most preferred scheme that any instance serves, and only that one.
            var best = instances
                .Select(i => Array.FindIndex(_schemes, s => string.Equals(s, i.Protocol, StringComparison.OrdinalIgnoreCase)))
                .Where(index => index >= 0)
                .DefaultIfEmpty(-1)
                .Min();
            chosen = best < 0 ? [] : instances.Where(i => string.Equals(i.Protocol, _schemes[best], StringComparison.OrdinalIgnoreCase));
        }

        foreach (var instance in chosen)
        {
            // With several schemes asked for, the endpoint carries the chosen one: an address alone would make the
            // HTTP handler take the query's first scheme whatever the instance serves.
            var endPoint = _query.IncludedSchemes.Count > 1 && string.IsNullOrEmpty(_query.EndpointName)
                ? (Uri.TryCreate($"{instance.Protocol}://{instance.Addr}", UriKind.Absolute, out var uri) ? new UriEndPoint(uri) : null)
                : ToEndPoint(instance.Addr);
            if (endPoint is null)
            {
                continue;
            }

            var endpoint = ServiceEndpoint.Create(endPoint);
            endpoint.Features.Set<IServiceEndpointProvider>(this);
            if (_options.ApplyHostNameMetadata)
            {
                endpoint.Features.Set<IHostNameFeature>(this);
            }

            yield return endpoint;
        }
    }

    /// <summary><c>addr</c> is <c>host:port</c> with an IPv4 address, a bracketed IPv6 address or a DNS name.</summary>
    private static EndPoint? ToEndPoint(string addr)
    {
        if (IPEndPoint.TryParse(addr, out var ip) && ip.Port != 0)
        {
            return ip;
        }

        var colon = addr.LastIndexOf(':');
        return colon > 0 && int.TryParse(addr.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) && port is > 0 and <= 65535
            ? new DnsEndPoint(addr[..colon], port)
            : null;
    }

    public ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _watch, null) is { } watch)
        {
            _pool.Release(watch);
        }

        _gate.Dispose();
        return default;
    }

    public override string ToString() => $"Registry({_query.ServiceName})";

    [LoggerMessage(Level = LogLevel.Warning, Message = "The registry refused to resolve {Service}; leaving it to the next provider: {Reason}")]
    private static partial void LogRefused(ILogger logger, string service, string reason);
}
