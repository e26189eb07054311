using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using System.Data.Common;
using Registry.Access;
using Registry.ChangeFeed;
using Registry.Drain;
using Registry.Edge;
using Registry.Leases;
using Registry.Model;
using Registry.Probes;
using Registry.State;
using Registry.Subscription;
using Registry.Telemetry;

namespace Registry.Registration;

/// <summary>Register, heartbeat and unregister: what providers call.</summary>
internal static class RegistrationApi
{
    public static IEndpointRouteBuilder MapRegistration(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("/v1").WithTags("Providers")
            .RequireAuthorization(AccessPolicies.Caller)
            .RequireRateLimiting(RateLimiting.PolicyName)
            .ProducesProblem(StatusCodes.Status429TooManyRequests);

        group.MapPost("/register", Register)
            .WithName("Register")
            .WithSummary("Register a provider instance and start or renew its lease")
            .WithDescription("Upserts the instance identified by (application, protocol, addr): a new instance answers 201, " +
                "an existing one has its meta replaced and its lease renewed and answers 200. The lease lasts `ttl` seconds " +
                "(clamped to the configured bounds); renew it with heartbeats. Consumers see the change within milliseconds. " +
                "With `probe` (http, https or tcp) the registry probes the instance itself every `probeInterval` seconds (default 10): " +
                "passing probes renew the lease (which is then at least 2(FailuresToEvict + 1) intervals long, so fewer failures never let it run out, and at least " +
                "twice the time a dead prober's share takes to move: Registry:Membership:NodeTimeout, two membership reads and two intervals) and after Registry:Probes:FailuresToEvict " +
                "consecutive failures the instance is evicted; registering again starts that count afresh. `http`/`https` GET `probePath` (default `/`) and pass on a 2xx, never " +
                "following a redirect; `tcp` passes when a connection opens. The `addr` (a DNS name is resolved) must lie in " +
                "Registry:Probes:AllowedNetworks; loopback, link-local and cloud-metadata addresses only when listed explicitly. " +
                "Registering again without `probe` turns probing off. A probe asked for with a registry token lasts as long as the token: " +
                "once it is revoked or has expired, the instance is probed no more and its lease ends; a JWT, whose expiry nothing would follow " +
                "once the request is answered, may not ask for probing (403). Registering an instance that a session holds takes it over, " +
                "even with the same meta: the session ends with `replaced` and its connection closing no longer removes the instance.")
            .Accepts<ProviderDocument>("application/json", "*/*")
            .Produces<LeaseDocument>(StatusCodes.Status201Created)
            .Produces<LeaseDocument>(StatusCodes.Status200OK)
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

        group.MapPost("/heartbeat", Heartbeat)
            .WithName("Heartbeat")
            .WithSummary("Renew an instance's lease")
            .WithDescription("Renews the lease of (application, protocol, addr) with the TTL granted at registration. `meta` may be " +
                "omitted and is never applied. 404 means the instance is not registered (never was, unregistered, or expired): register again. " +
                "A heartbeat for a lease that has already run out is answered once its renewal is written (normally within the node's " +
                "renewal interval, 250 ms by default), with 404 if the instance was evicted meanwhile. " +
                "503 means this node has not been able to record renewals for a while: heartbeat through another node.")
            .Accepts<ProviderDocument>("application/json", "*/*")
            .Produces<LeaseDocument>(StatusCodes.Status200OK)
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

        group.MapPost("/unregister", Unregister)
            .WithName("Unregister")
            .WithSummary("Remove an instance, optionally waiting until its consumers have heard")
            .WithDescription("Removes (application, protocol, addr) at once; `meta` may be omitted. 404 when it is not registered. " +
                "With `drain=SECONDS` (1–60) the answer waits until every consumer that was parked, on any live node, on a " +
                "subscription that included the instance has been sent an answer without it, or until `drain` runs out: 200 with " +
                "`delivered`, `pending` (answers not yet taken by the consumer's connection), `nodes` (live nodes that reported) and " +
                "`complete` (false on timeout). A node that dies meanwhile stops being waited for. Call it from a provider's " +
                "shutdown hook, then stop serving. The wait counts as a parked request for the limits, and the question as one of " +
                "`Registry:Drain:MaxQuestionsPerSecondPerClient` (`429` beyond). A drain asked of a node whose " +
                "change feed is down (the nodes' reports come back through it) is `503` with `Retry-After` and removes nothing: ask another node.")
            .Accepts<ProviderDocument>("application/json", "*/*")
            .Produces(StatusCodes.Status204NoContent)
            .Produces<DrainDocument>(StatusCodes.Status200OK)
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

        return endpoints;
    }

    private static async Task<Results<LeaseResult, ValidationProblem, ProblemHttpResult>> Register(
        HttpContext http,
        [FromQuery(Name = "ttl")] string? ttl,
        [FromQuery(Name = "probe")] string? probe,
        [FromQuery(Name = "probePath")] string? probePath,
        [FromQuery(Name = "probeInterval")] string? probeInterval,
        RequestBody body,
        RequestReader reader,
        WriteBatcher writes,
        ProbeRequests probes,
        IOptions<LeaseOptions> leases,
        IOptions<WriteOptions> writeOptions,
        IOptions<LimitsOptions> limits,
        ApplicationAccess access,
        AuditLog audit,
        Clients clients,
        CancellationToken cancellationToken)
    {
        // The probe's parameters are read first, so one 400 names every field wrong, before authorization.
        var errors = new Errors();
        var probeSpec = probes.Read(probe, probePath, probeInterval, errors);
        var (registering, invalid, refused) = await RegistrationRequest.ReadAsync(
            http, ttl, leases.Value.DefaultTtlSeconds, body, reader, leases.Value, access, errors, cancellationToken);
        if (registering is not { } request)
        {
            return invalid is not null ? invalid : refused!;
        }

        var (provider, granted) = request;
        if (probeSpec is not null)
        {
            if (CredentialIdentity.Of(http.User) is { Stored: false } expiring && expiring.Expires != DateTimeOffset.MaxValue)
            {
                // A probe outlives the request and ends with the registry token that asked for it; nothing follows a JWT's
                // expiry once the request is answered, so one would keep the instance registered past its credential.
                return TypedResults.Problem(
                    statusCode: StatusCodes.Status403Forbidden,
                    title: "Forbidden",
                    detail: "Probing lasts as long as the registry token that asks for it, and this credential expires on its own (a JWT): ask for probing with a registry token.");
            }

            if (await probes.RefusalAsync(provider.Key.Addr, cancellationToken) is { } refusal)
            {
                errors.Add("addr", refusal);
                return Problems.Invalid(errors);
            }

            // Long enough that fewer failed probes than FailuresToEvict never let it run out.
            granted = Math.Max(granted, (int)Math.Min(probes.LeaseSeconds(probeSpec), leases.Value.MaxTtlSeconds));
            // Probed for as long as a registry token that asked for it holds (see ProbeScheduler).
            if (CredentialIdentity.Of(http.User) is { Stored: true } credential)
            {
                probeSpec = probeSpec with { Credential = credential.Id };
            }
        }

        WriteResult result;
        try
        {
            result = await writes.SubmitAsync(new RegisterCommand(provider, granted, probeSpec), clients.Of(http));
        }
        catch (TooManyWritesException e)
        {
            return Problems.TooMany(http, limits.Value.RetryAfterSeconds, e.Message);
        }
        catch (WriteUnavailableException e)
        {
            return Problems.Unavailable(http, writeOptions.Value.RetryAfterSeconds, e.Message);
        }

        audit.Registered(CredentialIdentity.IdOf(http.User), provider.Key, result.Status == WriteStatus.Created);
        var lease = Lease(provider.Key, provider.Meta, granted, result.ExpiresAt, probeSpec?.ToDocument());
        return result.Status == WriteStatus.Created
            ? new LeaseResult(StatusCodes.Status201Created, lease, $"/v1/services/{Uri.EscapeDataString(provider.Application)}")
            : new LeaseResult(StatusCodes.Status200OK, lease);
    }

    private static async Task<Results<LeaseResult, ValidationProblem, ProblemHttpResult>> Heartbeat(
        HttpContext http,
        RequestBody body,
        RequestReader reader,
        RegistryState state,
        LeaseRenewer renewer,
        RegistryMetrics metrics,
        IOptions<WriteOptions> writeOptions,
        ApplicationAccess access,
        CancellationToken cancellationToken)
    {
        var (json, tooLarge) = await body.ReadAsync(http.Request, cancellationToken);
        if (tooLarge is not null)
        {
            return tooLarge;
        }

        var errors = new Errors();
        var provider = reader.ReadProvider(json, errors);
        if (provider is null)
        {
            return Problems.Invalid(errors);
        }

        if (await access.DenyAsync(http.User, Scope.Register, provider.Application) is { } denied)
        {
            return denied;
        }

        var instance = state.Find(provider.Key);
        if (instance is null)
        {
            metrics.HeartbeatReceived(known: false);
            return Problems.NotRegistered(provider.Key);
        }

        var renewal = await renewer.RenewHeartbeatAsync(instance, cancellationToken);
        switch (renewal.Outcome)
        {
            case RenewalOutcome.Refused:
                metrics.HeartbeatRefused();
                return Problems.Unavailable(http, writeOptions.Value.RetryAfterSeconds,
                    "This node cannot record lease renewals now (the database is unreachable from it); heartbeat through another node.");
            case RenewalOutcome.Gone:
                metrics.HeartbeatReceived(known: false);
                return Problems.NotRegistered(provider.Key);
            default:
                metrics.HeartbeatReceived(known: true);
                return new LeaseResult(StatusCodes.Status200OK, Lease(instance.Key, instance.Meta, instance.TtlSeconds, renewal.ExpiresAt));
        }
    }

    private static async Task<Results<NoContent, Ok<DrainDocument>, ValidationProblem, ProblemHttpResult>> Unregister(
        HttpContext http,
        [FromQuery(Name = "drain")] string? drain,
        RequestBody body,
        RequestReader reader,
        WriteBatcher writes,
        IOptions<WriteOptions> writeOptions,
        IOptions<DrainOptions> drainOptions,
        IOptions<LimitsOptions> limits,
        ApplicationAccess access,
        AuditLog audit,
        DrainCoordinator drains,
        ParkingLot parking,
        Clients clients,
        ChangeFeedListener feed,
        DrainQuestions questions,
        CancellationToken cancellationToken)
    {
        var (json, tooLarge) = await body.ReadAsync(http.Request, cancellationToken);
        if (tooLarge is not null)
        {
            return tooLarge;
        }

        var errors = new Errors();
        var drainSeconds = QueryNumber.Read(drain, "drain", 1, errors);
        if (drainSeconds > drainOptions.Value.MaxDrainSeconds)
        {
            errors.Add("drain", $"must be at most {drainOptions.Value.MaxDrainSeconds} seconds");
        }

        var provider = reader.ReadProvider(json, errors);
        if (provider is null || errors.Any)
        {
            return Problems.Invalid(errors);
        }

        if (await access.DenyAsync(http.User, Scope.Register, provider.Application) is { } denied)
        {
            return denied;
        }

        if (drainSeconds is not { } seconds)
        {
            return await RemoveAsync(http, clients.Of(http), provider.Key, writes, writeOptions.Value, limits.Value, audit) ?? (Results<NoContent, Ok<DrainDocument>, ValidationProblem, ProblemHttpResult>)TypedResults.NoContent();
        }

        if (!feed.IsListening)
        {
            return Problems.Unavailable(http, drainOptions.Value.RetryAfterSeconds, DrainApi.FeedDown);
        }

        // The wait is a held request like a parked poll, and a question to every node; refused before anything is removed.
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

            // Asked before the removal is written, so every node hears the question first.
            DrainCoordinator.PendingDrain pending;
            try
            {
                pending = await drains.AskAsync(provider.Key, (int)seconds, cancellationToken);
            }
            catch (DbException)
            {
                return Problems.Unavailable(http, writeOptions.Value.RetryAfterSeconds, "The database cannot take the write now; retry shortly.");
            }

            using (pending)
            {
                if (await RemoveAsync(http, client, provider.Key, writes, writeOptions.Value, limits.Value, audit) is { } refused)
                {
                    return refused;
                }

                return TypedResults.Ok(await pending.WaitAsync(cancellationToken));
            }
        }
        finally
        {
            parking.Leave(client);
        }
    }

    /// <summary>Removes the instance; a problem when it was not registered or the database cannot take the write.</summary>
    private static async Task<ProblemHttpResult?> RemoveAsync(
        HttpContext http, string client, InstanceKey key, WriteBatcher writes, WriteOptions writeOptions, LimitsOptions limits, AuditLog audit)
    {
        try
        {
            var result = await writes.SubmitAsync(new UnregisterCommand(key), client);
            if (result.Status != WriteStatus.Removed)
            {
                return Problems.NotRegistered(key);
            }

            audit.Unregistered(CredentialIdentity.IdOf(http.User), key);
            return null;
        }
        catch (TooManyWritesException e)
        {
            return Problems.TooMany(http, limits.RetryAfterSeconds, e.Message);
        }
        catch (WriteUnavailableException e)
        {
            return Problems.Unavailable(http, writeOptions.RetryAfterSeconds, e.Message);
        }
    }

    /// <summary>The lease document of register, heartbeat and a session's first event.</summary>
    internal static LeaseDocument Lease(InstanceKey key, Meta meta, int ttlSeconds, DateTimeOffset expiresAt, ProbeDocument? probe = null) => new()
    {
        Probe = probe,
        Application = key.Application,
        Protocol = key.Protocol,
        Addr = key.Addr,
        Meta = meta.ToDictionary(),
        Ttl = ttlSeconds,
        // RFC 3339 in UTC, to the millisecond.
        Expires = new DateTime(expiresAt.UtcTicks - (expiresAt.UtcTicks % TimeSpan.TicksPerMillisecond), DateTimeKind.Utc),
    };
}
