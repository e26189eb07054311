using Microsoft.Extensions.Options;
using Registry.Edge;
using Registry.Model;
using Registry.Telemetry;

namespace Registry.Subscription;

/// <summary>
/// Counts the requests a node holds open (parked polls), per client and in all, so that no
/// client can exhaust a node: beyond <see cref="LimitsOptions.MaxParkedPerClient"/> or
/// <see cref="LimitsOptions.MaxParked"/> a request is refused (429) instead of held. A client is
/// what <see cref="Clients"/> counts a request as.
/// </summary>
internal sealed class ParkingLot(IOptions<LimitsOptions> limits, RegistryMetrics metrics)
{
    private readonly ClientShares _places = new(limits.Value.MaxParkedPerClient, limits.Value.MaxParked);

    /// <summary>The detail of the 429 that <see cref="TryEnter"/> refusing calls for.</summary>
    public const string Full = "This node holds as many parked requests as it may for this client or in all (Registry:Limits:MaxParkedPerClient, MaxParked); retry shortly or on another node.";

    /// <summary>Requests held now.</summary>
    public int Total => _places.Total;

    /// <summary>Takes a place for the client; false (and counted) when a limit is reached.</summary>
    public bool TryEnter(string client)
    {
        if (_places.TryEnter(client) is not { } refused)
        {
            return true;
        }

        metrics.LimitReached(refused == ShareLimit.Total ? "parked" : "parked_per_client");
        return false;
    }

    /// <summary>Gives the client's place back.</summary>
    public void Leave(string client) => _places.Leave(client);
}
