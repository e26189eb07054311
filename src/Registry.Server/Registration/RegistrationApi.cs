using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Registry.Access;
using Registry.Edge;
using Registry.Leases;
using Registry.Model;
using Registry.Probes;
using Registry.State;
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
                "passing probes renew the lease (which is then at least three intervals long) and after Registry:Probes:FailuresToEvict " +
                "consecutive failures the instance is evicted. `http`/`https` GET `probePath` (default `/`) and pass on a 2xx, never " +
                "following a redirect; `tcp` passes when a connection opens. The `addr` (a DNS name is resolved) must lie in " +
                "Registry:Probes:AllowedNetworks; loopback, link-local and cloud-metadata addresses only when listed explicitly. " +
                "Registering again without `probe` turns probing off.")
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
                "503 means this node has not been able to record renewals for a while: heartbeat through another node.")
            .Accepts<ProviderDocument>("application/json", "*/*")
            .Produces<LeaseDocument>(StatusCodes.Status200OK)
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status404NotFound)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

        group.MapPost("/unregister", Unregister)
            .WithName("Unregister")
            .WithSummary("Remove an instance")
            .WithDescription("Removes (application, protocol, addr) at once; `meta` may be omitted. 404 when it is not registered.")
            .Accepts<ProviderDocument>("application/json", "*/*")
            .Produces(StatusCodes.Status204NoContent)
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
        ApplicationAccess access,
        AuditLog audit,
        CancellationToken cancellationToken)
    {
        var (json, tooLarge) = await body.ReadAsync(http.Request, cancellationToken);
        if (tooLarge is not null)
        {
            return tooLarge;
        }

        var errors = new Errors();
        var requestedTtl = QueryNumber.Read(ttl, "ttl", 1, errors);
        var probeSpec = probes.Read(probe, probePath, probeInterval, errors);
        var provider = reader.ReadProvider(json, errors);
        if (provider is null || errors.Any)
        {
            return Problems.Invalid(errors);
        }

        if (await access.DenyAsync(http.User, Scope.Register, provider.Application) is { } denied)
        {
            return denied;
        }

        if (probeSpec is not null && await probes.RefusalAsync(provider.Key.Addr, cancellationToken) is { } refusal)
        {
            errors.Add("addr", refusal);
            return Problems.Invalid(errors);
        }

        var granted = (int)Math.Clamp(requestedTtl ?? leases.Value.DefaultTtlSeconds, leases.Value.MinTtlSeconds, leases.Value.MaxTtlSeconds);
        if (probeSpec is not null)
        {
            // Long enough that the probes keep it alive while their owner changes (within two intervals).
            granted = Math.Max(granted, (int)Math.Min(3L * probeSpec.IntervalSeconds, leases.Value.MaxTtlSeconds));
        }

        WriteResult result;
        try
        {
            result = await writes.SubmitAsync(new RegisterCommand(provider, granted, probeSpec));
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

        if (renewer.Renew(instance) is { } expiresAt)
        {
            metrics.HeartbeatReceived(known: true);
        }
        else
        {
            metrics.HeartbeatRefused();
            return Problems.Unavailable(http, writeOptions.Value.RetryAfterSeconds,
                "This node cannot record lease renewals now (the database is unreachable from it); heartbeat through another node.");
        }

        return new LeaseResult(StatusCodes.Status200OK, Lease(instance.Key, instance.Meta, instance.TtlSeconds, expiresAt));
    }

    private static async Task<Results<NoContent, ValidationProblem, ProblemHttpResult>> Unregister(
        HttpContext http,
        RequestBody body,
        RequestReader reader,
        WriteBatcher writes,
        IOptions<WriteOptions> writeOptions,
        ApplicationAccess access,
        AuditLog audit,
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

        try
        {
            var result = await writes.SubmitAsync(new UnregisterCommand(provider.Key));
            if (result.Status != WriteStatus.Removed)
            {
                return Problems.NotRegistered(provider.Key);
            }

            audit.Unregistered(CredentialIdentity.IdOf(http.User), provider.Key);
            return TypedResults.NoContent();
        }
        catch (WriteUnavailableException e)
        {
            return Problems.Unavailable(http, writeOptions.Value.RetryAfterSeconds, e.Message);
        }
    }

    private static LeaseDocument Lease(InstanceKey key, Meta meta, int ttlSeconds, DateTimeOffset expiresAt, ProbeDocument? probe = null) => new()
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
