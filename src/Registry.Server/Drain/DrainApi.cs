using System.Data.Common;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Registry.Access;
using Registry.ChangeFeed;
using Registry.Edge;
using Registry.Model;
using Registry.Subscription;

namespace Registry.Drain;

/// <summary>Who watches an application: what operators call before and during a rollout.</summary>
internal static class DrainApi
{
    /// <summary>
    /// Why a node whose change feed is down takes no drain or watchers question: the nodes' answers, its own among them,
    /// come back only through its feed, so it would answer "nobody watches" or wait out a drain that another node could
    /// confirm at once.
    /// </summary>
    public const string FeedDown = "This node cannot hear the nodes' answers now (its change feed is reconnecting to the database); ask through another node.";

    public static IEndpointRouteBuilder MapDrain(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("/v1").WithTags("Consumers")
            .RequireAuthorization(AccessPolicies.Caller)
            .RequireRateLimiting(RateLimiting.PolicyName)
            .ProducesProblem(StatusCodes.Status429TooManyRequests);

        group.MapGet("/services/{application}/watchers", GetWatchers)
            .WithName("GetWatchers")
            .WithSummary("Count the consumers parked on an application, per node and per version they hold")
            .WithDescription("Asks every live node (through the database's notification channel) how many consumers it holds " +
                "parked on subscriptions that include the application, and which version of their answer each holds, so an " +
                "operator can see who still holds an old version. Nodes that do not answer within `Registry:Drain:WatchersWait` " +
                "(1 s by default) are left out. A parked consumer on a subscription naming several providers holds the version of its whole answer. " +
                "The question is held like a parked poll and counted with them: `429` with `Retry-After` beyond `Registry:Limits:MaxParkedPerClient` or `MaxParked`. " +
                "`429` with `Retry-After` beyond `Registry:Drain:MaxQuestionsPerSecondPerClient` drain and watchers questions a second (20). " +
                "`503` with `Retry-After` while this node's change feed is down (the answers come back through it): ask another node.")
            .Produces<WatchersDocument>(StatusCodes.Status200OK)
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status429TooManyRequests)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

        return endpoints;
    }

    private static async Task<Results<Ok<WatchersDocument>, ValidationProblem, ProblemHttpResult>> GetWatchers(
        HttpContext http,
        string application,
        RequestReader reader,
        ApplicationAccess access,
        DrainCoordinator coordinator,
        IOptions<DrainOptions> options,
        ParkingLot parking,
        Clients clients,
        IOptions<LimitsOptions> limits,
        ChangeFeedListener feed,
        DrainQuestions questions,
        CancellationToken cancellationToken)
    {
        var errors = new Errors();
        reader.CheckName(application, "application", errors);
        if (errors.Any)
        {
            return Problems.Invalid(errors);
        }

        if (await access.DenyAsync(http.User, Scope.Subscribe, application) is { } denied)
        {
            return denied;
        }

        if (!feed.IsListening)
        {
            return Problems.Unavailable(http, options.Value.RetryAfterSeconds, FeedDown);
        }

        // Held until every node answers (up to WatchersWait), and each costs every node a look-up and a notification:
        // counted as a parked request, so no client can hold the pool's connections with them, and limited in rate.
        var client = clients.Of(http);
        if (!parking.TryEnter(client))
        {
            return Problems.TooMany(http, limits.Value.RetryAfterSeconds, ParkingLot.Full);
        }

        try
        {
            if (questions.Refuse(http, client) is { } tooMany)
            {
                return tooMany;
            }

            return TypedResults.Ok(await coordinator.WatchersAsync(application, cancellationToken));
        }
        catch (DbException)
        {
            return Problems.Unavailable(http, options.Value.RetryAfterSeconds, "The database cannot carry the question to the nodes now; retry shortly.");
        }
        finally
        {
            parking.Leave(client);
        }
    }
}
