using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Registry.Access;
using Registry.Edge;
using Registry.Leases;
using Registry.Model;
using Registry.Registration;
using Registry.Subscription;

namespace Registry.Sessions;

/// <summary>Sessions: a registration that lives as long as one connection.</summary>
internal static class SessionApi
{
    public static IServiceCollection AddRegistrySessions(this IServiceCollection services)
    {
        services.AddOptions<SessionOptions>().BindConfiguration(RegistryOptions.Section(nameof(RegistryOptions.Sessions))).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<SessionMetrics>();
        services.AddSingleton<SessionKeeper>();
        return services;
    }

    public static IEndpointRouteBuilder MapSessions(this IEndpointRouteBuilder endpoints)
    {
        endpoints.MapGroup("/v1").WithTags("Providers")
            .RequireAuthorization(AccessPolicies.Caller)
            .RequireRateLimiting(RateLimiting.PolicyName)
            .MapPost("/sessions", Open)
            .WithName("OpenSession")
            .WithSummary("Register an instance for as long as this connection stays open")
            .WithDescription("Registers the instance (replacing an existing registration of the same triple) and keeps the response open " +
                "as `text/event-stream`: first `event: lease` with the lease document as data, then a `:` comment every " +
                "Registry:Sessions:KeepAliveSeconds (default 5; a third of `ttl` if that is shorter), which the response header `X-Registry-Keep-Alive` states. The node renews the lease while the connection is open; when it closes " +
                "the instance is removed within a second and its consumers are woken. If the instance is unregistered or evicted, the " +
                "stream ends with `event: ended` and `data: {\"reason\":\"unregistered\"}` (or `evicted`). Any later registration " +
                "of the same triple replaces the session, even with identical meta: another session (a provider reconnecting through " +
                "another connection or node) or a `POST /v1/register`. The old stream then ends with `reason` `replaced`, and its " +
                "connection closing no longer removes the instance, which now belongs to its new holder; consumers are not woken " +
                "when only the holder changed. Likewise a session replaces a heartbeat registration: its heartbeats keep answering " +
                "200 while the session lasts, and 404 once the session's close has removed the instance. A stream that ends without " +
                "`ended` (the node stopped) is to be opened again on any node. When the credential that opened the session is " +
                "revoked or expires (a JWT's `exp`), the stream closes within a second with the comment `: closed: the credential " +
                "that opened this session was revoked or has expired` and the lease is left to run out, as a heartbeat's would; " +
                "reopening with a valid credential takes the instance over without waking its consumers. " +
                "`ttl` (default 15 s) is how long the instance outlives a node that dies holding its session, and about how long it " +
                "outlives a provider host that dies without closing its connection (power lost, a partition: the node gives the " +
                "connection up once its keep-alives go unacknowledged for the TTL, at least two keep-alive intervals). Sessions count as " +
                "parked requests for the node's limits (429 with Retry-After beyond them).")
            .Accepts<ProviderDocument>("application/json", "*/*")
            .Produces<string>(StatusCodes.Status200OK, "text/event-stream")
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status429TooManyRequests)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
        return endpoints;
    }

    private static async Task<Results<SessionStream, ValidationProblem, ProblemHttpResult>> Open(
        HttpContext http,
        [FromQuery(Name = "ttl")] string? ttl,
        RequestBody body,
        RequestReader reader,
        WriteBatcher writes,
        ParkingLot parking,
        Clients clients,
        SessionKeeper keeper,
        IOptions<LeaseOptions> leases,
        IOptions<SessionOptions> sessions,
        IOptions<LimitsOptions> limits,
        IOptions<WriteOptions> writeOptions,
        ApplicationAccess access,
        CancellationToken cancellationToken)
    {
        var (registering, invalid, refused) = await RegistrationRequest.ReadAsync(
            http, ttl, sessions.Value.DefaultTtlSeconds, body, reader, leases.Value, access, new Errors(), cancellationToken);
        if (registering is not { } request)
        {
            return invalid is not null ? invalid : refused!;
        }

        // A session is a held request like a parked poll: it takes a place before it registers anything.
        var client = clients.Of(http);
        if (!parking.TryEnter(client))
        {
            return Problems.TooMany(http, limits.Value.RetryAfterSeconds,
                "This node holds as many parked requests and sessions as it may for this client or in all (Registry:Limits:MaxParkedPerClient, MaxParked); retry shortly or on another node.");
        }

        var (provider, granted) = request;
        try
        {
            var registered = await writes.SubmitAsync(new RegisterCommand(provider, granted, session: true), client);
            return new SessionStream(keeper, parking, client, provider, granted, registered);
        }
        catch (TooManyWritesException e)
        {
            parking.Leave(client);
            return Problems.TooMany(http, limits.Value.RetryAfterSeconds, e.Message);
        }
        catch (WriteUnavailableException e)
        {
            parking.Leave(client);
            return Problems.Unavailable(http, writeOptions.Value.RetryAfterSeconds, e.Message);
        }
    }
}

/// <summary>The open session as the endpoint's result: holds it, then gives its parking place back.</summary>
internal sealed class SessionStream(SessionKeeper keeper, ParkingLot parking, string client, Provider provider, int ttlSeconds, WriteResult registered) : IResult
{
    private int _left;

    public async Task ExecuteAsync(HttpContext httpContext)
    {
        try
        {
            await keeper.HoldAsync(httpContext, provider, ttlSeconds, registered, CredentialIdentity.Of(httpContext.User) ?? Grant.Anonymous, Leave);
        }
        finally
        {
            Leave();
        }
    }

    /// <summary>Gives the place back once, as soon as the stream is over.</summary>
    private void Leave()
    {
        if (Interlocked.Exchange(ref _left, 1) == 0)
        {
            parking.Leave(client);
        }
    }
}
