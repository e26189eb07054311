using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Net;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.ServiceDiscovery;

namespace Registry.Client.ServiceDiscovery;

/// <summary>Creates a <see cref="RegistryServiceEndpointProvider"/> for every service name that can be an application name.</summary>
internal sealed class RegistryServiceEndpointProviderFactory(RegistryClient client, IOptions<RegistryClientOptions> options) : IServiceEndpointProviderFactory
{
    public bool TryCreateProvider(ServiceEndpointQuery query, [NotNullWhen(true)] out IServiceEndpointProvider? provider)
    {
        if (!IsApplicationName(query.ServiceName))
        {
            provider = null;
            return false;
        }

        provider = new RegistryServiceEndpointProvider(client, query, options.Value.DiscoveryTimeout);
        return true;
    }

    // The registry's name rule: ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$
    private static bool IsApplicationName(string name) =>
        name.Length is > 0 and <= 128
        && char.IsAsciiLetterOrDigit(name[0])
        && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');
}

/// <summary>
/// Resolves a service name through a registry subscription to the application of that name,
/// keeping only instances whose protocol is one of the query's schemes. The subscription's
/// change token makes the resolver refresh on every change, and an outage keeps the last endpoints.
/// </summary>
internal sealed class RegistryServiceEndpointProvider(RegistryClient client, ServiceEndpointQuery query, TimeSpan firstAnswerTimeout)
    : IServiceEndpointProvider
{
    private readonly SemaphoreSlim _starting = new(1, 1);
    private RegistrySubscription? _subscription;

    public async ValueTask PopulateAsync(IServiceEndpointBuilder endpoints, CancellationToken cancellationToken)
    {
        var subscription = await SubscriptionAsync(cancellationToken);
        // Taken before reading the answer, so a change between the two is not missed.
        endpoints.AddChangeToken(subscription.GetChangeToken());
        RegistryAnswer? answer;
        try
        {
            answer = await subscription.WaitForFirstAnswerAsync(cancellationToken).WaitAsync(firstAnswerTimeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            // Nothing known yet: resolve nothing now; the change token refreshes when the first answer arrives.
            return;
        }

        foreach (var instance in subscription.Current?.Endpoints ?? answer.Endpoints)
        {
            if ((query.IncludedSchemes.Count == 0 || query.IncludedSchemes.Contains(instance.Protocol, StringComparer.OrdinalIgnoreCase))
                && ToEndPoint(instance.Addr) is { } endPoint)
            {
                endpoints.Endpoints.Add(ServiceEndpoint.Create(endPoint));
            }
        }
    }

    private async Task<RegistrySubscription> SubscriptionAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _subscription) is { } existing)
        {
            return existing;
        }

        await _starting.WaitAsync(cancellationToken);
        try
        {
            return _subscription ??= await client.SubscribeAsync(new SubscriptionEntry(query.ServiceName), cancellationToken);
        }
        finally
        {
            _starting.Release();
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

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _subscription, null) is { } subscription)
        {
            await subscription.DisposeAsync();
        }

        _starting.Dispose();
    }

    public override string ToString() => $"Registry({query.ServiceName})";
}
