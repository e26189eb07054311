using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.Options;
using Microsoft.Net.Http.Headers;
using Registry.Access;
using Registry.Edge;
using Registry.Model;
using Registry.State;
using Registry.Telemetry;

namespace Registry.Subscription;

/// <summary>Subscribe (long polling) and the read-only views of the registry: what consumers and operators call.</summary>
internal static class SubscriptionApi
{
    private const string VersionDescription = "The version the caller holds. When it is the current version the request is held until the answer changes or `wait` runs out.";
    private const string WaitDescription = "Seconds to hold the request (default 30; values above the configured cap, 55 by default, are clamped; up to wait/16 of jitter is added).";

    public static IEndpointRouteBuilder MapSubscription(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("/v1").WithTags("Consumers")
            .RequireAuthorization(AccessPolicies.Caller)
            .RequireRateLimiting(RateLimiting.PolicyName)
            .ProducesProblem(StatusCodes.Status429TooManyRequests);

        group.MapPost("/subscribe", Subscribe)
            .WithName("Subscribe")
            .WithSummary("Get the instances matching a subscription, long-polling for changes")
            .WithDescription("Answers at once without `version`, or when `version` is not current. When it is current the request " +
                "is held until the answer changes or `wait` runs out; on timeout the same, unchanged answer comes back, so a client " +
                "loop is simply: send the version you hold, take what comes back. Every answer carries `ETag: \"<version>\"`.")
            .Accepts<SubscriptionDocument>("application/json", "*/*")
            .Produces<AnswerDocument>(StatusCodes.Status200OK)
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge);

        group.MapGet("/services", ListServices)
            .WithName("ListServices")
            .WithSummary("List the applications registered now")
            .WithDescription("Each application with its number of instances, sorted by name.");

        group.MapGet("/services/{application}", GetService)
            .WithName("GetService")
            .WithSummary("Get one application's instances, long-polling for changes")
            .WithDescription("The one-provider subscription for curl and runbooks: filter with `protocol` and `meta.KEY=VALUE` " +
                "parameters; `version` and `wait` hold as for subscribe. As a conditional GET, `If-None-Match: \"<version>\"` " +
                "holds the same way and answers 304 with no body when the wait runs out unchanged; with a list of tags it holds while any of them is current, " +
                "with `*` on whatever is current (RFC 9110); a header that is not `*` or a list of quoted tags is a 400. " +
                "Meta keys are case-sensitive (`meta.idc` and `meta.Idc` are two filters). An unknown application is an empty answer.")
            .Produces<AnswerDocument>(StatusCodes.Status200OK)
            .Produces(StatusCodes.Status304NotModified)
            .ProducesValidationProblem();

        // HEAD answers as GET does, without the body (RFC 9110): the headers alone (ETag, a 304) are what it is for.
        group.MapMethods("/services", [HttpMethods.Head], ListServices).ExcludeFromDescription();
        group.MapMethods("/services/{application}", [HttpMethods.Head], GetService).ExcludeFromDescription();

        return endpoints;
    }

    private static async Task<Results<AnswerResult, EmptyHttpResult, ValidationProblem, ProblemHttpResult>> Subscribe(
        HttpContext http,
        [FromQuery(Name = "version")] string? version,
        [FromQuery(Name = "wait")] string? wait,
        RequestBody body,
        RequestReader reader,
        LongPoll poll,
        RegistryState state,
        RegistryMetrics metrics,
        IOptions<LimitsOptions> limits,
        ApplicationAccess access,
        TokenCache tokens,
        Clients clients)
    {
        var (json, tooLarge) = await body.ReadAsync(http.Request, http.RequestAborted);
        if (tooLarge is not null)
        {
            return tooLarge;
        }

        var errors = new Errors();
        var heldVersion = reader.CheckVersion(version, errors);
        var waitSeconds = QueryNumber.Read(wait, "wait", 0, errors);
        var entries = reader.ReadSubscription(json, errors);
        if (entries is null || errors.Any)
        {
            return Problems.Invalid(errors);
        }

        // Refused whole when any provider is forbidden: a silently filtered answer would look like an outage.
        if (await access.DenyAsync(http.User, Scope.Subscribe, entries.Select(e => e.Provider).Distinct(StringComparer.Ordinal)) is { } denied)
        {
            return denied;
        }

        return await HoldAsync(http, poll, entries, HeldVersions.Of(heldVersion), waitSeconds, notModifiedOnTimeout: false, state, metrics, limits.Value, tokens, clients);
    }

    /// <summary>Admin sees every application; any other credential the ones it may subscribe to.</summary>
    private static Ok<ServicesDocument> ListServices(HttpContext http, RegistryState state) => TypedResults.Ok(new ServicesDocument
    {
        Services = state.Applications.Values
            .Where(s => CredentialIdentity.Of(http.User) is { } grant && (grant.Admin || grant.Allows(Scope.Subscribe, s.Application)))
            .Select(s => new ServiceSummary { Application = s.Application, Instances = s.Count })
            .ToList(),
    });

    private static async Task<Results<AnswerResult, EmptyHttpResult, ValidationProblem, ProblemHttpResult>> GetService(
        HttpContext http,
        string application,
        [FromQuery(Name = "protocol")] string? protocol,
        [FromQuery(Name = "version")] string? version,
        [FromQuery(Name = "wait")] string? wait,
        RequestReader reader,
        LongPoll poll,
        RegistryState state,
        RegistryMetrics metrics,
        IOptions<LimitsOptions> limits,
        ApplicationAccess access,
        TokenCache tokens,
        Clients clients)
    {
        var errors = new Errors();
        reader.CheckName(application, "application", errors);
        if (protocol is not null)
        {
            reader.CheckProtocol(protocol, "protocol", errors);
        }

        // Read from the query string itself: Request.Query folds names' case, and meta keys are case-sensitive.
        var given = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var pair in new QueryStringEnumerable(http.Request.QueryString.Value))
        {
            var name = pair.DecodeName().ToString();
            if (name.StartsWith("meta.", StringComparison.Ordinal))
            {
                (given.TryGetValue(name, out var values) ? values : given[name] = []).Add(pair.DecodeValue().ToString());
            }
            else if (name.StartsWith("meta.", StringComparison.OrdinalIgnoreCase))
            {
                // Otherwise ignored like any unknown parameter, and the filter silently not applied.
                errors.Add(name, "is not a parameter: a meta filter is written meta.KEY, in lower case");
            }
        }

        var pairs = new List<KeyValuePair<string, string>>();
        foreach (var (name, values) in given)
        {
            var key = name["meta.".Length..];
            if (values.Count != 1)
            {
                errors.Add(name, "must be given once");
            }
            else if (reader.CheckMetaPair(key, values[0], name, errors))
            {
                pairs.Add(new(key, values[0]));
            }
        }

        reader.CheckMetaCount(pairs.Count, "meta", errors);
        var conditional = EntityTags(http.Request.Headers.IfNoneMatch, reader, errors);
        // Checked even when If-None-Match, which wins, is given: a malformed parameter is a 400 either way.
        var asked = reader.CheckVersion(version, errors);
        var held = conditional ?? HeldVersions.Of(asked);
        var waitSeconds = QueryNumber.Read(wait, "wait", 0, errors);
        if (errors.Any)
        {
            return Problems.Invalid(errors);
        }

        if (await access.DenyAsync(http.User, Scope.Subscribe, application) is { } denied)
        {
            return denied;
        }

        var entries = new[] { new SubscriptionEntry(application, protocol, Meta.From(pairs)) };
        return await HoldAsync(http, poll, entries, held, waitSeconds, notModifiedOnTimeout: conditional is not null, state, metrics, limits.Value, tokens, clients);
    }

    /// <summary>
    /// Answers the poll, holding it while the caller's version is current; 429 at a node's limits; 401 when the
    /// registry token it is held with is revoked meanwhile (revocations take effect within a second, on held polls too),
    /// or when its credential (a registry token or a JWT) expires meanwhile, as a session closes then.
    /// </summary>
    private static async Task<Results<AnswerResult, EmptyHttpResult, ValidationProblem, ProblemHttpResult>> HoldAsync(
        HttpContext http, LongPoll poll, IReadOnlyList<SubscriptionEntry> entries, HeldVersions? held, long? waitSeconds,
        bool notModifiedOnTimeout, RegistryState state, RegistryMetrics metrics, LimitsOptions limits, TokenCache tokens, Clients clients)
    {
        // Only a stored token can be revoked: an Open node's callers, the bootstrap token and JWTs pay nothing for this.
        var grant = CredentialIdentity.Of(http.User);
        var revoked = grant is { Stored: true } ? tokens.Revocation(grant) : CancellationToken.None;
        using var expiring = grant is not null ? poll.Expiring(grant.Expires) : null;
        using var ending = revoked.CanBeCanceled || expiring is not null
            ? CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, revoked, expiring?.Token ?? CancellationToken.None)
            : null;
        PollOutcome outcome;
        try
        {
            outcome = await poll.PollAsync(entries, held, waitSeconds, clients.Of(http), ending?.Token ?? http.RequestAborted);
        }
        catch (TooManySubscriptionsException e)
        {
            return Problems.TooMany(http, limits.RetryAfterSeconds, e.Message);
        }

        if (outcome.End is PollEnd.Refused or PollEnd.ClientGone)
        {
            outcome.Consumer?.Finish(sent: false);
        }

        return outcome.End switch
        {
            PollEnd.ClientGone when !http.RequestAborted.IsCancellationRequested && revoked.IsCancellationRequested => Unauthorized(http, "has been revoked"),
            PollEnd.ClientGone when !http.RequestAborted.IsCancellationRequested && expiring?.IsCancellationRequested == true => Unauthorized(http, "has expired"),
            PollEnd.ClientGone => TypedResults.Empty,
            PollEnd.Refused => Problems.TooMany(http, limits.RetryAfterSeconds, ParkingLot.Full),
            _ => Answer(outcome, notModifiedOnTimeout ? held : null, state, metrics, poll.Writers),
        };
    }

    private static ProblemHttpResult Unauthorized(HttpContext http, string what)
    {
        http.Response.Headers.WWWAuthenticate = "Bearer";
        return TypedResults.Problem(
            statusCode: StatusCodes.Status401Unauthorized,
            title: "Authentication required",
            detail: $"The credential this poll was held with {what}.");
    }

    /// <summary>
    /// The answer to write: with <paramref name="conditional"/> (a conditional GET's tags) 304 when the wait ran out, and
    /// when the answer moved to another of the versions the caller named (it said it has that one too).
    /// </summary>
    private static AnswerResult Answer(PollOutcome outcome, HeldVersions? conditional, RegistryState state, RegistryMetrics metrics, AnswerWriters writers)
    {
        if (outcome.End is PollEnd.Changed or PollEnd.TimedOut or PollEnd.Shutdown)
        {
            metrics.PollCompleted(outcome.End.ToString().ToLowerInvariant());
        }

        var notModified = conditional is { } tags
            && (outcome.End is PollEnd.TimedOut or PollEnd.Shutdown || (outcome.End is PollEnd.Changed && tags.Lists(outcome.Answer.Version)));
        return new AnswerResult(outcome.Answer, notModified, state.StaleSince, writers, outcome.Consumer);
    }

    /// <summary>
    /// The entity tags of If-None-Match, unquoted (weak tags compare the same for GET), each checked as a version;
    /// <c>*</c> holds on whatever is current. Null without the header; a header that is not a list of tags is a 400.
    /// </summary>
    private static HeldVersions? EntityTags(Microsoft.Extensions.Primitives.StringValues header, RequestReader reader, Errors errors)
    {
        if (header.Count == 0)
        {
            return null;
        }

        if (!EntityTagHeaderValue.TryParseStrictList(header, out var tags) || tags.Count == 0)
        {
            errors.Add("If-None-Match", "must be * or a list of entity tags, each a version in double quotes");
            return null;
        }

        if (tags.Any(t => t.Equals(EntityTagHeaderValue.Any)))
        {
            return HeldVersions.Any;
        }

        return HeldVersions.Of(tags.Select(t => reader.CheckVersion(t.Tag.Value![1..^1], errors, "If-None-Match") ?? ""));
    }
}

/// <summary>
/// Writes a pre-serialised answer with its ETag; 304 with no body when asked for. A consumer
/// that parked is finished once the last bytes are flushed (sent) or the write fails (gone).
/// </summary>
internal sealed class AnswerResult(Answer answer, bool notModified, DateTimeOffset? staleSince, AnswerWriters writers, ParkedConsumer? consumer = null) : IResult
{
    public async Task ExecuteAsync(HttpContext httpContext)
    {
        var sent = false;
        try
        {
            await WriteAsync(httpContext);
            sent = true;
        }
        finally
        {
            consumer?.Finish(sent);
        }
    }

    private async Task WriteAsync(HttpContext httpContext)
    {
        var response = httpContext.Response;
        response.Headers.ETag = answer.ETag;
        response.Headers.CacheControl = "no-cache";
        if (staleSince is { } since)
        {
            // Served from memory while the change feed is down: say so, and for how long.
            response.Headers["X-Registry-Stale"] = "true";
            response.Headers.Age = ((long)Math.Max(0, (DateTimeOffset.UtcNow - since).TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            // A client that knows one address (a load balancer's) would send its next poll down this kept-alive connection,
            // to this node again: closed, the balancer chooses a node anew, and one that reaches the database is likelier.
            if (!HttpProtocol.IsHttp2(httpContext.Request.Protocol) && !HttpProtocol.IsHttp3(httpContext.Request.Protocol))
            {
                response.Headers.Connection = "close";
            }
        }

        if (notModified)
        {
            response.StatusCode = StatusCodes.Status304NotModified;
            if (consumer is not null)
            {
                // Sends the headers now, so "sent" means sent.
                await response.BodyWriter.FlushAsync(httpContext.RequestAborted);
            }

            return;
        }

        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/json";
        response.ContentLength = answer.ContentLength;
        await answer.WriteAsync(response.BodyWriter, writers, httpContext.RequestAborted);
    }
}
