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

    /// <summary>
    /// The characters of the distinct subscriptions each client's parked polls hold (a view is kept while a poll holds
    /// it): the node's <see cref="LimitsOptions.MaxSubscriptionCharacters"/> must not be one client's to fill.
    /// </summary>
    private readonly ClientShares _characters = new(limits.Value.MaxSubscriptionCharactersPerClient, int.MaxValue);

    /// <summary>
    /// How many of each client's parked polls hold each view: its characters count once per client. Keyed by the view
    /// itself, not its key (a held view is the one every poll of its subscription gets, and a key may be long to hash).
    /// </summary>
    private readonly Dictionary<(string Client, SubscriptionView View), int> _holding = [];
    private readonly Lock _gate = new();

    /// <summary>The detail of the 429 that <see cref="TryEnter"/> refusing calls for.</summary>
    public const string Full = "This node holds as many parked requests as it may for this client or in all (Registry:Limits:MaxParkedPerClient, MaxParked), " +
        "or the distinct subscriptions this client's parked polls hold name as many characters as they may (MaxSubscriptionCharactersPerClient); " +
        "retry shortly or on another node.";

    /// <summary>Requests held now.</summary>
    public int Total => _places.Total;

    /// <summary>
    /// Takes a place for the client, and for a poll that holds <paramref name="view"/> the characters of a view the
    /// client's parked polls do not hold yet; false (and counted) when a limit is reached.
    /// </summary>
    public bool TryEnter(string client, SubscriptionView? view = null)
    {
        if (_places.TryEnter(client) is { } refused)
        {
            metrics.LimitReached(refused == ShareLimit.Total ? "parked" : "parked_per_client");
            return false;
        }

        if (view is not null)
        {
            lock (_gate)
            {
                var holding = _holding.GetValueOrDefault((client, view));
                if (holding == 0 && _characters.TryEnter(client, Characters(view)) is not null)
                {
                    _places.Leave(client);
                    metrics.LimitReached("subscription_characters_per_client");
                    return false;
                }

                _holding[(client, view)] = holding + 1;
            }
        }

        return true;
    }

    /// <summary>Gives back what <see cref="TryEnter"/> took.</summary>
    public void Leave(string client, SubscriptionView? view = null)
    {
        _places.Leave(client);
        if (view is not null)
        {
            lock (_gate)
            {
                if (--System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_holding, (client, view)) == 0)
                {
                    _holding.Remove((client, view));
                    _characters.Leave(client, Characters(view));
                }
            }
        }
    }

    private static int Characters(SubscriptionView view) => Math.Max(1, view.Key.Length);
}
