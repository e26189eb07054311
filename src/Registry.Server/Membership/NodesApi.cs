using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.HttpResults;
using Registry.Access;
using Registry.Edge;

namespace Registry.Membership;

/// <summary>One live node in <c>GET /v1/nodes</c>.</summary>
public sealed class NodeDocument
{
    /// <summary>The node's id (random, taken at start).</summary>
    [JsonPropertyName("id")]
    public required string Id { get; init; }

    /// <summary>The URL it advertises; null until it knows where it listens.</summary>
    [JsonPropertyName("url")]
    public required string? Url { get; init; }

    /// <summary>When it started (RFC 3339, UTC).</summary>
    [JsonPropertyName("started")]
    public required DateTimeOffset Started { get; init; }

    /// <summary>When it last reached the database (RFC 3339, UTC).</summary>
    [JsonPropertyName("lastSeen")]
    public required DateTimeOffset LastSeen { get; init; }

    /// <summary>
    /// The networks its probes may reach (its <c>Registry:Probes:AllowedNetworks</c>); null when it does not
    /// probe. A probed instance is probed by one of the nodes whose networks admit its address.
    /// </summary>
    [JsonPropertyName("probeNetworks")]
    public required IReadOnlyList<string>? ProbeNetworks { get; init; }

    /// <summary>
    /// The fraction (0 to 1) of its recent probes that passed, over the instances another node could probe as well;
    /// null when it does not probe, when no other node could probe its instances, or when it knows the outcome of fewer
    /// recent probes than <c>Registry:Probes:SuspectSelfMinInstances</c> (as while it has withdrawn).
    /// </summary>
    [JsonPropertyName("probesPassing")]
    public required double? ProbesPassing { get; init; }

    /// <summary>
    /// True while it suspects itself cut off from the instances it probes (nearly all its probes failed while another
    /// node's passed): it leaves its share to the other nodes able to probe it, and ends no lease of those only it may probe.
    /// </summary>
    [JsonPropertyName("probesWithdrawn")]
    public required bool ProbesWithdrawn { get; init; }
}

/// <summary>The answer to <c>GET /v1/nodes</c>.</summary>
public sealed class NodesDocument
{
    /// <summary>The live nodes, ordered by id.</summary>
    [JsonPropertyName("nodes")]
    public required IReadOnlyList<NodeDocument> Nodes { get; init; }
}

/// <summary>The cluster's live nodes (admin scope).</summary>
internal static class NodesApi
{
    public static IEndpointRouteBuilder MapNodes(this IEndpointRouteBuilder endpoints)
    {
        var nodes = endpoints.MapGroup("/v1/nodes").WithTags("Nodes")
            .RequireAuthorization(AccessPolicies.Admin)
            .RequireRateLimiting(RateLimiting.PolicyName)
            .ProducesProblem(StatusCodes.Status429TooManyRequests);
        nodes.MapMethods("", [HttpMethods.Head], List).ExcludeFromDescription();
        nodes.MapGet("", List)
            .WithName("ListNodes")
            .WithSummary("List the live registry nodes")
            .WithDescription("The nodes that have reached the database within Registry:Membership:NodeTimeout and have not stopped: " +
                "id, advertised URL, start, last mark and the networks each probes. Work that one node does for an instance (probing it) " +
                "is shared among those of these able to do it (probing: whose networks admit the instance's address).")
            .Produces<NodesDocument>(StatusCodes.Status200OK)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        return endpoints;
    }

    private static async Task<Ok<NodesDocument>> List(LiveNodes live, CancellationToken cancellationToken)
    {
        // A database out of reach is the 503 with Retry-After of DatabaseUnavailableHandler.
        var nodes = await live.ReadAsync(cancellationToken);
        return TypedResults.Ok(new NodesDocument
        {
            Nodes = nodes.Select(n => new NodeDocument { Id = n.Id, Url = n.Url, Started = n.Started, LastSeen = n.LastSeen, ProbeNetworks = n.ProbeNetworks, ProbesPassing = n.ProbesPassing, ProbesWithdrawn = n.ProbesWithdrawn }).ToList(),
        });
    }
}
