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

    /// <summary>Takes a share for the client: null when taken, else which limit refused it.</summary>
    public ShareLimit? TryEnter(string client)
    {
        lock (_gate)
        {
            var held = _perClient.GetValueOrDefault(client);
            if (_total >= total)
            {
                return ShareLimit.Total;
            }

            if (held >= perClient)
            {
                return ShareLimit.PerClient;
            }

            _perClient[client] = held + 1;
            _total++;
            return null;
        }
    }

    /// <summary>Gives the client's share back.</summary>
    public void Leave(string client)
    {
        lock (_gate)
        {
            _total--;
            if (--System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrNullRef(_perClient, client) == 0)
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
