using System.Data.Common;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Edge;
using Registry.Model;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Access;

/// <summary>A registry token as the API shows it: never its secret or hash, except <see cref="Token"/> once at creation.</summary>
public sealed class TokenDocument
{
    /// <summary>The public id (<c>tok_…</c>), what logs name and DELETE takes.</summary>
    public required string Id { get; init; }

    public required string Description { get; init; }

    /// <summary>Application patterns it may register, heartbeat and unregister.</summary>
    public required IReadOnlyList<string> Register { get; init; }

    /// <summary>Application patterns it may subscribe to and read.</summary>
    public required IReadOnlyList<string> Subscribe { get; init; }

    public required bool Admin { get; init; }

    public required DateTimeOffset Created { get; init; }

    /// <summary>When it stops being accepted; null for never. An expired token stays listed for Registry:Auth:ForgetExpiredAfter (7 days), then is deleted.</summary>
    public required DateTimeOffset? Expires { get; init; }

    /// <summary>When a node last accepted it (written every Registry:Auth:LastUsedFlushInterval); null for never.</summary>
    public required DateTimeOffset? LastUsed { get; init; }

    /// <summary>The secret: in the answer to its creation only.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Token { get; init; }
}

/// <summary>The answer to <c>GET /v1/tokens</c>.</summary>
public sealed class TokensDocument
{
    public required IReadOnlyList<TokenDocument> Tokens { get; init; }
}

/// <summary>The body of <c>POST /v1/tokens</c> (documents the schema; the body is read strictly by hand).</summary>
public sealed class TokenRequest
{
    public required string Description { get; init; }

    public IReadOnlyList<string>? Register { get; init; }

    public IReadOnlyList<string>? Subscribe { get; init; }

    public bool? Admin { get; init; }

    public DateTimeOffset? Expires { get; init; }
}

/// <summary>RFC 3339 date-times, zone required.</summary>
internal static partial class Rfc3339
{
    public static bool TryParse(string text, out DateTimeOffset value)
    {
        value = default;
        return Format().IsMatch(text) && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.None, out value);
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,7})?([Zz]|[+-]\d{2}:\d{2})$")]
    private static partial System.Text.RegularExpressions.Regex Format();
}

/// <summary>Creating, listing and revoking registry tokens (admin scope).</summary>
internal static partial class TokenApi
{
    public static IEndpointRouteBuilder MapTokens(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("/v1/tokens").WithTags("Tokens")
            .RequireAuthorization(AccessPolicies.Admin)
            .RequireRateLimiting(RateLimiting.PolicyName)
            .ProducesProblem(StatusCodes.Status429TooManyRequests)
            .ProducesProblem(StatusCodes.Status503ServiceUnavailable);

        group.MapPost("", Create)
            .WithName("CreateToken")
            .WithSummary("Create a registry token")
            .WithDescription("Creates a token with the given scopes and answers it once with its secret in `token` (`rgt_…`); " +
                "only a SHA-256 hash is stored. Every node accepts it within a second.")
            .Accepts<TokenRequest>("application/json")
            .Produces<TokenDocument>(StatusCodes.Status201Created)
            .ProducesValidationProblem()
            .ProducesProblem(StatusCodes.Status409Conflict)
            .ProducesProblem(StatusCodes.Status413PayloadTooLarge);

        group.MapGet("", List)
            .WithName("ListTokens")
            .WithSummary("List the registry tokens")
            .WithDescription("Every token with its scopes, creation, expiry and last use; never a secret or a hash.")
            .Produces<TokensDocument>(StatusCodes.Status200OK);
        group.MapMethods("", [HttpMethods.Head], List).ExcludeFromDescription();

        group.MapDelete("/{id}", Revoke)
            .WithName("RevokeToken")
            .WithSummary("Revoke a registry token")
            .WithDescription("Deletes the token; every node refuses it within a second.")
            .Produces(StatusCodes.Status204NoContent)
            .ProducesProblem(StatusCodes.Status404NotFound);

        return endpoints;
    }

    private static async Task<Results<Created<TokenDocument>, ValidationProblem, ProblemHttpResult>> Create(
        HttpContext http, RequestBody body, RegistryDatabase database, TokenCache cache, AuditLog audit, TimeProvider time,
        IOptions<AccessOptions> options, ILoggerFactory loggers, CancellationToken cancellationToken)
    {
        var (json, tooLarge) = await body.ReadAsync(http.Request, cancellationToken);
        if (tooLarge is not null)
        {
            return tooLarge;
        }

        var errors = new Dictionary<string, string[]>(StringComparer.Ordinal);
        var spec = Read(json, time.GetUtcNow(), options.Value, errors);
        if (spec is null)
        {
            return TypedResults.ValidationProblem(errors, detail: string.Join("; ", errors.Select(e => $"{e.Key}: {e.Value[0]}")), title: "The request is invalid");
        }

        // A database out of reach is the 503 with Retry-After of DatabaseUnavailableHandler.
        if (await TokenStore.CreateAsync(database.DataSource, spec, options.Value.MaxTokens, cancellationToken) is not var (token, secret))
        {
            return TypedResults.Problem(
                statusCode: StatusCodes.Status409Conflict,
                title: "Too many tokens",
                detail: $"This registry holds {options.Value.MaxTokens} tokens (Registry:Auth:MaxTokens), each loaded by every node: revoke those no longer used " +
                    "(GET /v1/tokens shows when each was last used), or give tokens made per deploy an expiry.");
        }

        // Committed: from here the secret exists only in this answer, so the caller gets it whatever follows.
        audit.TokenCreated(CredentialIdentity.IdOf(http.User), token.Id, token.Admin, token.Register, token.Subscribe);
        await ReloadAsync(cache, loggers, token.Id, cancellationToken);
        return TypedResults.Created($"/v1/tokens/{token.Id}", Document(token, null, secret));
    }

    private static async Task<Ok<TokensDocument>> List(RegistryDatabase database, TokenCache cache, CancellationToken cancellationToken)
    {
        var tokens = await TokenStore.ListAsync(database.DataSource, cancellationToken);

        // This node's uses not yet written count too.
        var usedHere = cache.LastUsedHere();
        return TypedResults.Ok(new TokensDocument
        {
            Tokens = tokens.Select(t => Document(t, usedHere.TryGetValue(t.Id, out var at) ? at : null, null)).ToList(),
        });
    }

    private static async Task<Results<NoContent, ProblemHttpResult>> Revoke(
        HttpContext http, string id, RegistryDatabase database, TokenCache cache, AuditLog audit,
        ILoggerFactory loggers, CancellationToken cancellationToken)
    {
        // Only an id this registry could have given is looked up: anything else (one too long for the announcement
        // that would carry it, say) is not a token either, and must not reach the database as a statement that fails.
        if (!RegistryTokens.IsId(id) || !await TokenStore.DeleteAsync(database.DataSource, id, cancellationToken))
        {
            return TypedResults.Problem(statusCode: StatusCodes.Status404NotFound, title: "Token not found", detail: $"There is no token {id}.");
        }

        audit.TokenRevoked(CredentialIdentity.IdOf(http.User), id);
        await ReloadAsync(cache, loggers, id, cancellationToken);
        return TypedResults.NoContent();
    }

    /// <summary>
    /// Makes this node see a committed change at once; the others do when the notification arrives.
    /// A failure is logged, not answered: the change is committed (answering 503 would lose a new
    /// token's secret, or send a retried revocation to 404), and the notification reloads every
    /// node's cache, this one's included, once the database answers again.
    /// </summary>
    private static async Task ReloadAsync(TokenCache cache, ILoggerFactory loggers, string tokenId, CancellationToken cancellationToken)
    {
        try
        {
            await cache.ReloadAsync(cancellationToken);
        }
        catch (DbException e)
        {
            LogReloadFailed(loggers.CreateLogger(typeof(TokenApi)), tokenId, e);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Token {TokenId} was changed in the database, but this node could not reload its tokens; the change notification will")]
    private static partial void LogReloadFailed(ILogger logger, string tokenId, Exception exception);

    private static TokenDocument Document(StoredToken token, DateTimeOffset? lastUsedHere, string? secret) => new()
    {
        Id = token.Id,
        Description = token.Description,
        Register = token.Register,
        Subscribe = token.Subscribe,
        Admin = token.Admin,
        Created = token.Created,
        Expires = token.Expires,
        LastUsed = lastUsedHere > token.LastUsed || token.LastUsed is null ? lastUsedHere : token.LastUsed,
        Token = secret,
    };

    /// <summary>Reads the creation body strictly: unknown fields, nulls and wrong types are errors, each named.</summary>
    internal static TokenSpec? Read(ReadOnlyMemory<byte> json, DateTimeOffset now, AccessOptions limits, Dictionary<string, string[]> errors)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            errors["$"] = [JsonProblem.NotJson(e)];
            return null;
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                errors["$"] = ["must be a JSON object"];
                return null;
            }

            string? description = null;
            string[] register = [], subscribe = [];
            var admin = false;
            DateTimeOffset? expires = null;
            var given = new HashSet<string>(StringComparer.Ordinal);
            foreach (var member in document.RootElement.EnumerateObject())
            {
                // The parser takes a lone surrogate escape ("\ud800") or bytes that are not UTF-8;
                // reading such a name or string as .NET text throws. Still the client's input: a 400.
                string name;
                try
                {
                    name = member.Name;
                }
                catch (InvalidOperationException)
                {
                    errors["$"] = [JsonProblem.UnreadableName];
                    continue;
                }

                // Strict like the other request documents: a proxy or an audit tool that reads the first "admin" must
                // not see another token than the one made from the last.
                if (!given.Add(name))
                {
                    errors[name] = ["is given more than once"];
                    continue;
                }

                var value = member.Value;
                try
                {
                    switch (name)
                    {
                        case "description" when value.ValueKind == JsonValueKind.String:
                            description = value.GetString()!;
                            if (TokenSpec.DescriptionProblem(description, limits) is { } wrongDescription)
                            {
                                errors["description"] = [wrongDescription];
                            }

                            break;
                        case "register" or "subscribe" when value.ValueKind == JsonValueKind.Array:
                            var patterns = value.EnumerateArray().Select(p => p.ValueKind == JsonValueKind.String ? p.GetString()! : "").ToArray();
                            if (TokenSpec.PatternsProblem(patterns, limits) is { } wrongPatterns)
                            {
                                errors[name] = [wrongPatterns];
                            }

                            if (name == "register")
                            {
                                register = patterns;
                            }
                            else
                            {
                                subscribe = patterns;
                            }

                            break;
                        case "admin" when value.ValueKind is JsonValueKind.True or JsonValueKind.False:
                            admin = value.GetBoolean();
                            break;
                        case "expires" when value.ValueKind == JsonValueKind.String:
                            if (!Rfc3339.TryParse(value.GetString()!, out var at))
                            {
                                errors["expires"] = ["must be an RFC 3339 time with a zone, e.g. 2027-01-01T00:00:00Z"];
                            }
                            else if (at <= now)
                            {
                                errors["expires"] = ["must be in the future"];
                            }
                            else
                            {
                                expires = at.ToUniversalTime();
                            }

                            break;
                        case "description" or "register" or "subscribe" or "admin" or "expires":
                            errors[name] = [name switch
                            {
                                "description" => "must be a string",
                                "admin" => "must be true or false",
                                "expires" => "must be an RFC 3339 time string",
                                _ => "must be an array of patterns",
                            }];
                            break;
                        default:
                            errors[name] = ["is not a field of a token request"];
                            break;
                    }
                }
                catch (InvalidOperationException)
                {
                    errors[name] = ["is not valid Unicode text"];
                }
            }

            if (description is null && !errors.ContainsKey("description"))
            {
                errors["description"] = ["is required"];
            }

            return errors.Count > 0 ? null : new TokenSpec(description!, register, subscribe, admin, expires);
        }
    }
}
