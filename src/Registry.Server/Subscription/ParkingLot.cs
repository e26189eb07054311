using System.Runtime.InteropServices;
using Microsoft.Extensions.Options;
using Registry.Model;
using Registry.Telemetry;

namespace Registry.Subscription;

/// <summary>
/// Counts the requests a node holds open (parked polls), per client and in all, so that no
/// client can exhaust a node: beyond <see cref="LimitsOptions.MaxParkedPerClient"/> or
/// <see cref="LimitsOptions.MaxParked"/> a request is refused (429) instead of held. A client
/// is the remote address together with the credential's id, so a fleet sharing one token
/// from many hosts is many clients.
/// </summary>
internal sealed class ParkingLot(IOptions<LimitsOptions> limits, RegistryMetrics metrics)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, int> _perClient = new(StringComparer.Ordinal);
    private int _total;

    /// <summary>The detail of the 429 that <see cref="TryEnter"/> refusing calls for.</summary>
    public const string Full = "This node holds as many parked requests as it may for this client or in all (Registry:Limits:MaxParkedPerClient, MaxParked); retry shortly or on another node.";

    /// <summary>Requests held now.</summary>
    public int Total
    {
        get
        {
            lock (_gate)
            {
                return _total;
            }
        }
    }

    /// <summary>Takes a place for the client; false (and counted) when a limit is reached.</summary>
    public bool TryEnter(string client)
    {
        string? refused;
        lock (_gate)
        {
            var held = _perClient.GetValueOrDefault(client);
            refused = _total >= limits.Value.MaxParked ? "parked"
                : held >= limits.Value.MaxParkedPerClient ? "parked_per_client"
                : null;
            if (refused is null)
            {
                _perClient[client] = held + 1;
                _total++;
                return true;
            }
        }

        metrics.LimitReached(refused);
        return false;
    }

    /// <summary>Gives the client's place back.</summary>
    public void Leave(string client)
    {
        lock (_gate)
        {
            _total--;
            if (--CollectionsMarshal.GetValueRefOrNullRef(_perClient, client) == 0)
            {
                _perClient.Remove(client);
            }
        }
    }

    /// <summary>
    /// The client a request comes from: its remote address (after forwarded headers from the
    /// configured trusted proxies) and the id of its credential, when it has one.
    /// </summary>
    public static string ClientOf(HttpContext http) =>
        $"{http.Connection.RemoteIpAddress}|{http.User.FindFirst(System.Security.Claims.ClaimTypes.NameIdentifier)?.Value}";
}
