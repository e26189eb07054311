using Microsoft.AspNetCore.Http.HttpResults;
using Registry.Access;
using Registry.Leases;
using Registry.Model;

namespace Registry.Registration;

/// <summary>A registration as register and a session read it: what to register, and for how long.</summary>
internal readonly record struct Registering(Provider Provider, int TtlSeconds);

/// <summary>Reads, validates and authorizes a registration request (register, and opening a session).</summary>
internal static class RegistrationRequest
{
    /// <summary>
    /// The registration, or why not: a 400 naming each field (<c>ttl</c>, the body, and whatever the caller found
    /// wrong already in <paramref name="errors"/>), all before authorization, or a 413 or 403. A TTL absent takes
    /// <paramref name="defaultTtlSeconds"/>; any is clamped to the lease bounds.
    /// </summary>
    public static async Task<(Registering? Registering, ValidationProblem? Invalid, ProblemHttpResult? Refused)> ReadAsync(
        HttpContext http, string? ttl, int defaultTtlSeconds, RequestBody body, RequestReader reader, LeaseOptions leases, ApplicationAccess access,
        Errors errors, CancellationToken cancellationToken)
    {
        var (json, tooLarge) = await body.ReadAsync(http.Request, cancellationToken);
        if (tooLarge is not null)
        {
            return (null, null, tooLarge);
        }

        var requestedTtl = QueryNumber.Read(ttl, "ttl", 1, errors);
        var provider = reader.ReadProvider(json, errors);
        if (provider is null || errors.Any)
        {
            return (null, Problems.Invalid(errors), null);
        }

        if (await access.DenyAsync(http.User, Scope.Register, provider.Application) is { } denied)
        {
            return (null, null, denied);
        }

        var granted = (int)Math.Clamp(requestedTtl ?? defaultTtlSeconds, leases.MinTtlSeconds, leases.MaxTtlSeconds);
        return (new Registering(provider, granted), null, null);
    }
}
