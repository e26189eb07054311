using System.Text.Json.Serialization;

namespace Registry.Client;

/// <summary>
/// What a drain found (<c>POST /v1/unregister?drain=…</c>): how many consumers that held the instance have been
/// sent an answer without it, how many have not yet, how many live registry nodes reported, and whether all had
/// before the drain ran out.
/// </summary>
public sealed class DrainResult
{
    /// <summary>The drain's answer as the registry sent it.</summary>
    [JsonConstructor]
    public DrainResult(int delivered, int pending, int nodes, bool complete)
    {
        Delivered = delivered;
        Pending = pending;
        Nodes = nodes;
        Complete = complete;
        Removed = true;
    }

    private DrainResult()
    {
        Complete = true;
    }

    /// <summary>The registry no longer knew the instance (it had expired, or was never registered): nobody watched it.</summary>
    public static DrainResult NotRegistered { get; } = new();

    /// <summary>Consumers that held the instance and have been sent an answer without it.</summary>
    [JsonPropertyName("delivered")]
    public int Delivered { get; }

    /// <summary>Consumers that held the instance and had not taken that answer when the drain ended.</summary>
    [JsonPropertyName("pending")]
    public int Pending { get; }

    /// <summary>Live registry nodes that reported.</summary>
    [JsonPropertyName("nodes")]
    public int Nodes { get; }

    /// <summary>Whether every live node reported nothing pending before the drain ran out.</summary>
    [JsonPropertyName("complete")]
    public bool Complete { get; }

    /// <summary>Whether this drain removed the instance (false: the registry did not know it).</summary>
    [JsonIgnore]
    public bool Removed { get; }
}
