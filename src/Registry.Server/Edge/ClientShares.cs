namespace Registry.Edge;

/// <summary>
/// Counts what each client holds of one of a node's resources, and all clients together, so that
/// no client takes more than its share: <see cref="TryEnter"/> refuses past either limit. A client
/// is what <see cref="Clients"/> counts a request as.
/// </summary>
internal sealed class ClientShares(int perClient, int total)
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, int> _perClient = new(StringComparer.Ordinal);
    private int _total;

    /// <summary>What all clients hold now.</summary>
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

    /// <summary>Takes <paramref name="weight"/> (at least 1) for the client: null when taken, else which limit refused it.</summary>
    public ShareLimit? TryEnter(string client, int weight = 1)
    {
        lock (_gate)
        {
            var held = _perClient.GetValueOrDefault(client);
            if (_total > total - weight)
            {
                return ShareLimit.Total;
            }

            if (held > perClient - weight)
            {
                return ShareLimit.PerClient;
            }

            _perClient[client] = held + weight;
            _total += weight;
            return null;
        }
    }

    /// <summary>Gives back what the client took.</summary>
    public void Leave(string client, int weight = 1)
    {
        lock (_gate)
        {
            _total -= weight;
            if ((System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_perClient, client) -= weight) == 0)
            {
                _perClient.Remove(client);
            }
        }
    }
}

/// <summary>Which limit of <see cref="ClientShares"/> refused.</summary>
internal enum ShareLimit
{
    Total,
    PerClient,
}
