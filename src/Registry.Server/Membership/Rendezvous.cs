namespace Registry.Membership;

/// <summary>
/// Rendezvous (highest random weight) hashing: the owner of an item is the live node whose
/// combined hash with the item is highest. Every node computes the same owner from the same
/// membership without talking to the others, and when a node leaves only its own items move
/// (each to the node that scored second), so work that exactly one node must do for an item
/// follows membership by itself. The hashes are fixed functions of the strings (FNV-1a and a
/// SplitMix64 finaliser), never the process-randomised <see cref="string.GetHashCode()"/>.
/// </summary>
internal static class Rendezvous
{
    /// <summary>The owner of <paramref name="item"/> among <paramref name="nodes"/> (ids); null when there is none.</summary>
    public static string? Owner(string item, IReadOnlyList<string> nodes)
    {
        var itemHash = Hash(item);
        string? owner = null;
        var best = 0UL;
        foreach (var node in nodes)
        {
            var score = Mix(itemHash ^ Hash(node));
            if (owner is null || score > best || (score == best && string.CompareOrdinal(node, owner) < 0))
            {
                owner = node;
                best = score;
            }
        }

        return owner;
    }

    /// <summary>FNV-1a over the UTF-16 code units.</summary>
    internal static ulong Hash(string text)
    {
        var hash = 14695981039346656037UL;
        foreach (var c in text)
        {
            hash = (hash ^ c) * 1099511628211UL;
        }

        return Mix(hash);
    }

    /// <summary>SplitMix64's finaliser: every input bit moves every output bit.</summary>
    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
        return z ^ (z >> 31);
    }
}
