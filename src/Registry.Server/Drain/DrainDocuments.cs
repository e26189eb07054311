using System.Text.Json.Serialization;

namespace Registry.Drain;

/// <summary>The answer to an unregistration with <c>drain</c>.</summary>
public sealed class DrainDocument
{
    /// <summary>Consumers that held the instance and have been sent an answer without it.</summary>
    [JsonPropertyName("delivered")]
    public required int Delivered { get; init; }

    /// <summary>Consumers that held the instance and have not been sent that answer yet (their connection has not taken it).</summary>
    [JsonPropertyName("pending")]
    public required int Pending { get; init; }

    /// <summary>Live nodes that reported.</summary>
    [JsonPropertyName("nodes")]
    public required int Nodes { get; init; }

    /// <summary>True when every live node reported nothing pending before the drain ran out.</summary>
    [JsonPropertyName("complete")]
    public required bool Complete { get; init; }
}

/// <summary>Consumers parked on an application, cluster-wide.</summary>
public sealed class WatchersDocument
{
    /// <summary>The application asked about.</summary>
    [JsonPropertyName("application")]
    public required string Application { get; init; }

    /// <summary>One row per node that answered, by node id.</summary>
    [JsonPropertyName("nodes")]
    public required IReadOnlyList<NodeWatchers> Nodes { get; init; }
}

/// <summary>One node's consumers parked on the application.</summary>
public sealed class NodeWatchers
{
    /// <summary>The node's id (as in <c>GET /v1/nodes</c>).</summary>
    [JsonPropertyName("node")]
    public required string Node { get; init; }

    /// <summary>Consumers parked on the node on subscriptions that include the application.</summary>
    [JsonPropertyName("parked")]
    public required int Parked { get; init; }

    /// <summary>How many of them hold each version (the version of their whole answer).</summary>
    [JsonPropertyName("versions")]
    public required IReadOnlyDictionary<string, int> Versions { get; init; }
}
