// Over 300 lines on purpose: one document's descriptions, examples and filters, read side by side (other branches extend it; split after they merge).
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;
using Registry.Leases;
using Registry.Model;
using Registry.Sessions;
using Registry.Subscription;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace Registry.Operations;

/// <summary>
/// What the OpenAPI document says beyond what the endpoints declare: the three documents of
/// API.md as examples, a problem+json schema and a reason on every error status, every query
/// parameter described, the wire headers, and <c>/metrics</c>. Kept apart from the endpoint
/// definitions so the API files stay about behaviour.
/// </summary>
internal static class OpenApiDocumentation
{
    public const string DocumentName = "v1";

    /// <summary>The security scheme's name in the document.</summary>
    public const string BearerSchemeName = "bearer";

    public static IServiceCollection AddRegistryOpenApiDocumentation(this IServiceCollection services)
    {
        services.Configure<SwaggerGenOptions>(swagger =>
        {
            swagger.SwaggerDoc(DocumentName, new OpenApiInfo
            {
                Title = "Registry",
                Version = DocumentName,
                Description = "A service registry: providers register `(application, protocol, addr, meta)` under a lease and renew it " +
                    "with heartbeats; consumers subscribe and learn of every change by HTTP long polling. Any node answers any call; " +
                    "PostgreSQL is the one source of truth. Errors are `application/problem+json` (RFC 9457); a query parameter an operation takes, given more than once, is a 400 naming it.",
            });

            // The liveness body is an anonymous type; give its schema a name a reader understands.
            var defaultIds = swagger.SchemaGeneratorOptions.SchemaIdSelector;
            swagger.SchemaGeneratorOptions.SchemaIdSelector = type =>
                type.Name.Contains("AnonymousType", StringComparison.Ordinal) ? "Liveness" : defaultIds(type);

            // A reader meets the API in a provider's order of business: register first, then
            // subscribe, then operate. Within a tag the endpoints keep their mapping order.
            swagger.OrderActionsBy(api => api.ActionDescriptor.EndpointMetadata.OfType<ITagsMetadata>().SelectMany(t => t.Tags).FirstOrDefault() switch
            {
                "Providers" => "1",
                "Consumers" => "2",
                _ => "3",
            });

            swagger.AddSecurityDefinition(BearerSchemeName, new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.Http,
                Scheme = "bearer",
                BearerFormat = "registry token (rgt_…) or JWT",
                Description = "`Authorization: Bearer <token>`: a registry token (`rgt_…`, from `POST /v1/tokens` or the server's " +
                    "`tokens create` command) or, when configured, a JWT from the identity provider. Its scopes say which " +
                    "applications it may register and subscribe to, and whether it is admin.",
            });
            // Relative: the document describes whichever node serves it (and "Try it out" calls that node).
            swagger.AddServer(new OpenApiServer { Url = "/", Description = "The node serving this document" });

            swagger.OperationFilter<RegistryOperationFilter>();
            swagger.DocumentFilter<RegistryDocumentFilter>();
        });
        services.AddSingleton<CachedOpenApiDocuments>();
        return services;
    }

    /// <summary>The provider document of API.md.</summary>
    internal const string ProviderExample = """
        {
          "application": "provider_test",
          "protocol": "http",
          "addr": "127.0.0.1:8080",
          "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" }
        }
        """;

    /// <summary>The subscription document of API.md.</summary>
    internal const string SubscriptionExample = """
        {
          "subscribes": [
            { "provider": "test_provider1", "protocol": "http",
              "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" } },
            { "provider": "test_provider2", "protocol": "http",
              "meta": { "cluster": "small", "tag": "read" } }
          ]
        }
        """;

    /// <summary>The answer document of API.md.</summary>
    internal const string AnswerExample = """
        {
          "version": "23des4f",
          "endpoints": [
            { "application": "provider_test", "protocol": "http", "addr": "127.0.0.1:8080",
              "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" } }
          ]
        }
        """;

    internal const string LeaseExample = """
        {
          "application": "provider_test",
          "protocol": "http",
          "addr": "127.0.0.1:8080",
          "meta": { "cluster": "small", "idc": "shanghai", "tag": "read" },
          "ttl": 30,
          "expires": "2026-01-01T12:00:30.000Z"
        }
        """;

    /// <summary>The start of a session's stream, as a JSON string (its body is text/event-stream).</summary>
    internal const string SessionExample = """
        "event: lease\ndata: {\"application\":\"provider_test\",\"protocol\":\"http\",\"addr\":\"127.0.0.1:8080\",\"meta\":{\"cluster\":\"small\"},\"ttl\":15,\"expires\":\"2026-01-01T12:00:15.000Z\"}\n\n: keep-alive\n\n: keep-alive\n\n"
        """;

    internal const string ServicesExample = """
        { "services": [ { "application": "provider_test", "instances": 2 } ] }
        """;

    internal const string ValidationProblemExample = """
        {
          "type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
          "title": "The request is invalid",
          "status": 400,
          "detail": "addr: must be host:port with a port from 1 to 65535",
          "errors": { "addr": [ "must be host:port with a port from 1 to 65535" ] }
        }
        """;

    internal const string TokenRequestExample = """
        { "description": "payments deploys", "register": ["payments", "payments.*"], "subscribe": ["*"], "admin": false, "expires": "2027-01-01T00:00:00Z" }
        """;

    internal const string TokenExample = """
        {
          "id": "tok_3q2xNn8Lr0cWqYbK",
          "description": "payments deploys",
          "register": ["payments", "payments.*"],
          "subscribe": ["*"],
          "admin": false,
          "created": "2026-01-01T12:00:00+00:00",
          "expires": "2027-01-01T00:00:00+00:00",
          "lastUsed": null,
          "token": "rgt_wH5b1s3Yg0Qf8xJcV2nK7pLr4mT9aZ6eD1uB0oS3iE8"
        }
        """;

    internal const string DrainExample = """
        { "delivered": 118, "pending": 0, "nodes": 3, "complete": true }
        """;

    internal const string WatchersExample = """
        { "application": "provider_test", "nodes": [ { "node": "3f9c2a61d0e4", "parked": 120, "versions": { "5b0e8c1f9a3d7e2b4c6f": 118, "a71d3e9c0b5f2e8d4a6c": 2 } } ] }
        """;

    /// <summary>Why each status is answered, by operation where it differs.</summary>
    private static string ResponseDescription(string? operationId, string status, LimitsOptions limits) => (operationId, status) switch
    {
        ("Register", "201") => "A new instance was registered; its lease is in the body.",
        ("Register", "200") => "The instance existed: its meta was replaced and its lease renewed.",
        ("Heartbeat", "200") => "The lease was renewed with the TTL granted at registration; the body shows the stored meta.",
        ("Heartbeat", "404") or ("Unregister", "404") => "The instance is not registered (never registered, unregistered, or its lease ran out); a provider must register again.",
        ("Unregister", "204") => "The instance was removed; subscribers are woken.",
        ("Unregister", "200") => "With `drain`: the instance was removed, and every live node reported (`complete` true) or the drain ran out (`complete` false). `delivered`: consumers sent an answer without it; `pending`: consumers whose connection had not taken it; `nodes`: live nodes that reported.",
        ("GetWatchers", "200") => "The nodes that answered in time, by id, each with its consumers parked on subscriptions that include the application and how many hold each version.",
        ("OpenSession", "200") => "The session is open: `event: lease` with the lease document, then a `: keep-alive` comment every " +
            "keep-alive interval, until `event: ended` (`unregistered`, `evicted` or `replaced`) or the connection closes.",
        ("OpenSession", "429") => "This node holds as many parked requests and sessions as it may for this client or in all, or the client " +
            "exceeded its rate limit; retry after `Retry-After` seconds, or on another node.",
        ("Subscribe", "429") or ("GetService", "429") => "This node holds as many parked requests as it may for this client or in all, " +
            "or as many distinct subscriptions as it may (Registry:Limits:MaxSubscriptions, MaxSubscriptionCharacters), or the client " +
            "exceeded its rate limit; retry after `Retry-After` seconds, or on another node.",
        ("GetWatchers", "429") => "This node holds as many parked requests as it may for this " +
            "client or in all, or the client exceeded its rate limit; retry after `Retry-After` seconds, or on another node.",
        ("Subscribe", "401") or ("GetService", "401") => "No valid credential (missing, malformed, unknown, expired or revoked); " +
            "`WWW-Authenticate: Bearer`. Also the answer to a held poll whose registry token is revoked, or whose credential expires, meanwhile. Repeated failures from one address answer 429.",
        ("Subscribe", "200") or ("GetService", "200") => "The answer: the matching instances and their version. Also the answer when the wait ran out unchanged. `ETag` carries the version.",
        ("GetService", "304") => "With `If-None-Match`: the wait ran out and the answer is unchanged. No body.",
        ("ListServices", "200") => "The applications registered now, sorted by name, with their number of instances.",
        ("Health", "200") => "The process is alive.",
        ("Ready", "200") => "The node can serve: database reachable, migrations applied, change feed listening.",
        ("Ready", "429") => "A credential that is not valid, from an address past Registry:Auth:MaxFailuresPerMinute failed authentications " +
            "in the last minute (the bootstrap token too, there: a right guess looks like a wrong one); retry after `Retry-After` seconds. Without a credential, or with a valid registry token or JWT, the check is always answered.",
        ("Ready", "503") => "The node cannot serve yet or any more; the body names the failing check.",
        ("CreateToken", "201") => "The token, with its secret in `token`: shown only here, stored only as a SHA-256 hash.",
        ("ListTokens", "200") => "Every token with its scopes and last use; never a secret or a hash.",
        ("RevokeToken", "204") => "The token was deleted; every node refuses it within a second.",
        ("RevokeToken", "404") => "There is no token with this id.",
        ("ListTokens", "503") or ("ListNodes", "503") => "The database cannot be reached from this node now (this list is read from it, " +
            "not from memory); retry after `Retry-After` seconds.",
        ("ListNodes", "200") => "The live nodes, ordered by id: id, advertised URL (null until the node knows where it listens), start and last mark.",
        (_, "400") => "The request is malformed or invalid; `errors` names each field and the reason.",
        (_, "401") => "No valid credential (missing, malformed, unknown, expired or revoked); `WWW-Authenticate: Bearer`. Repeated failures from one address answer 429.",
        (_, "403") => "The credential is valid but lacks the scope this call needs; the problem names the application and the scope.",
        (_, "404") => "Not found.",
        (_, "413") => $"The body is larger than the configured limit ({Size(limits.MaxBodyBytes)} on this node).",
        (_, "429") => "This client sent more requests than its rate limit allows (when rate limiting is configured); retry after `Retry-After` seconds.",
        (_, "503") => "The database cannot take the write now; retry after `Retry-After` seconds. Reads keep being served from memory.",
        _ => "",
    };

    /// <summary>A size in bytes as a reader says it (64 KiB).</summary>
    private static string Size(int bytes) => bytes % 1024 == 0
        ? (bytes % (1024 * 1024) == 0 ? $"{bytes / (1024 * 1024)} MiB" : $"{bytes / 1024} KiB")
        : $"{bytes} bytes";

    /// <summary>
    /// Describes each operation; the limits and defaults it states are read from the options the
    /// node runs with, so the document cannot drift from the configuration.
    /// </summary>
    internal sealed class RegistryOperationFilter(
        IOptions<LeaseOptions> leases,
        IOptions<SubscriptionOptions> subscriptions,
        IOptions<LimitsOptions> limits) : IOperationFilter
    {
        private Dictionary<string, string> QueryParameters() => new(StringComparer.Ordinal)
        {
            ["drain"] = "Seconds to wait, 1 to 60, until every consumer that watched the instance (on any live node) has been sent an answer without it; the answer is then 200 with the counts instead of 204. Outside 1 to 60 is 400.",
            ["id"] = "The token's id (`tok_…`), as `GET /v1/tokens` lists it.",
            ["ttl"] = "Lease length in seconds, a positive integer. Values outside the configured bounds " +
                $"({leases.Value.MinTtlSeconds} to {leases.Value.MaxTtlSeconds} on this node) are clamped; absent, the configured default " +
                $"({leases.Value.DefaultTtlSeconds} s). The granted value is in the answer's `ttl`.",
            ["version"] = "The version the caller holds (from a previous answer or its ETag). When it is the current version the request is held until the answer changes or `wait` runs out; otherwise the answer comes at once.",
            ["wait"] = $"Seconds to hold the request when `version` is current: a non-negative integer, default {subscriptions.Value.DefaultWaitSeconds}; " +
                $"values above the configured cap ({subscriptions.Value.MaxWaitSeconds} on this node; keep it below common 60 s proxy idle timeouts) are clamped, " +
                $"and up to wait/{subscriptions.Value.JitterDivisor} of random jitter is added.",
            ["probe"] = "`http`, `https` or `tcp`: the registry probes the instance itself (off until Registry:Probes:AllowedNetworks lists networks; the `addr` must lie in them). Absent: no probing (a registration without it turns probing off).",
            ["probePath"] = "The path an `http`/`https` probe requests, starting with one `/`; default `/`. A 2xx passes; redirects are not followed.",
            ["probeInterval"] = "Seconds between probes, a positive integer; default 10, values above the configured maximum (3600 by default) are clamped. Each probe times out after min(interval, Registry:Probes:TimeoutSeconds).",
            ["protocol"] = "Only instances serving this protocol (e.g. `http`); absent matches any.",
            ["application"] = $"The application's name; it must match `^[A-Za-z0-9][A-Za-z0-9._-]{{0,{limits.Value.MaxApplicationLength - 1}}}$` (400 otherwise). An unknown application is an empty answer.",
        };

        public void Apply(OpenApiOperation operation, OperationFilterContext context)
        {
            var queryParameters = QueryParameters();
            foreach (var parameter in operation.Parameters?.OfType<OpenApiParameter>() ?? [])
            {
                if (parameter.Name is { } name && queryParameters.TryGetValue(name, out var description))
                {
                    parameter.Description = description;
                    parameter.Schema = name switch
                    {
                        "ttl" => new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Minimum = "1" },
                        "wait" => new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Minimum = "0" },
                        "drain" => new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Minimum = "1", Maximum = "60" },
                        "version" => new OpenApiSchema { Type = JsonSchemaType.String, MaxLength = limits.Value.MaxVersionLength },
                        "probe" => new OpenApiSchema { Type = JsonSchemaType.String, Enum = [JsonValue.Create("http")!, JsonValue.Create("https")!, JsonValue.Create("tcp")!] },
                        "probeInterval" => new OpenApiSchema { Type = JsonSchemaType.Integer, Format = "int32", Minimum = "1" },
                        _ => parameter.Schema,
                    };
                }
            }

            var id = operation.OperationId;
            if (id == "OpenSession" && operation.Parameters?.OfType<OpenApiParameter>().FirstOrDefault(p => p.Name == "ttl") is { } ttl)
            {
                ttl.Description = "Lease length in seconds, a positive integer, clamped to the configured bounds; absent, " +
                    "Registry:Sessions:DefaultTtlSeconds (15 s). The node renews it while the connection is open; it is how long the " +
                    "instance outlives a node that dies holding the session.";
            }

            if (id == "GetService")
            {
                operation.Parameters ??= [];
                operation.Parameters.Add(new OpenApiParameter
                {
                    Name = "If-None-Match",
                    In = ParameterLocation.Header,
                    Description = "`\"<version>\"`: a conditional GET (RFC 9110). Held like `version`; answers 304 with no body when the wait runs out unchanged. " +
                        "A list of tags holds while any of them is current; `*` holds on whatever is current.",
                    Schema = new OpenApiSchema { Type = JsonSchemaType.String },
                });
                operation.Description += " Example: `?protocol=http&meta.idc=shanghai&meta.tag=read` (subset match, case-sensitive). " +
                    "The `meta.KEY` family is not listed among the parameters because OpenAPI 3.0 cannot name one.";
            }

            Secure(operation, context);

            var example = id switch
            {
                "Register" or "Heartbeat" or "Unregister" or "OpenSession" => ProviderExample,
                "Subscribe" => SubscriptionExample,
                "CreateToken" => TokenRequestExample,
                _ => null,
            };
            foreach (var media in operation.RequestBody?.Content?.Values ?? [])
            {
                media.Example = example is null ? null : JsonNode.Parse(example);
            }

            foreach (var (status, response) in operation.Responses ?? [])
            {
                if (response is not OpenApiResponse concrete)
                {
                    continue;
                }

                var description = ResponseDescription(id, status, limits.Value);
                if (description.Length > 0)
                {
                    concrete.Description = description;
                }

                Describe(concrete, id, status, context);
            }

            // Group-level declarations (rate limiting) land first; a reader expects status order.
            if (operation.Responses is { Count: > 1 } responses)
            {
                var ordered = responses.OrderBy(r => r.Key, StringComparer.Ordinal).ToList();
                responses.Clear();
                foreach (var (status, response) in ordered)
                {
                    responses.Add(status, response);
                }
            }
        }

        /// <summary>
        /// Operations behind a policy need the bearer scheme and may answer 401 and 403; the others
        /// say they need nothing (the document's default is the bearer scheme). /readyz takes a
        /// credential optionally: it shows its details to admin.
        /// </summary>
        private static void Secure(OpenApiOperation operation, OperationFilterContext context)
        {
            var policy = context.ApiDescription.ActionDescriptor.EndpointMetadata
                .OfType<Microsoft.AspNetCore.Authorization.IAuthorizeData>().Select(a => a.Policy).FirstOrDefault();
            if (policy is null)
            {
                operation.Security = operation.OperationId == "Ready"
                    ? [new OpenApiSecurityRequirement(), Bearer(context.Document)]
                    : [new OpenApiSecurityRequirement()];
                return;
            }

            operation.Security = [Bearer(context.Document)];
            operation.Description += policy == Access.AccessPolicies.Admin
                ? " Needs the `admin` scope."
                : operation.OperationId == "ListServices"
                    ? " Any credential: admin sees every application, others those they may subscribe to."
                    : $" Needs the `{(operation.Tags?.Any(t => t.Name == "Providers") == true ? "register" : "subscribe")}` scope for the application" +
                      (operation.OperationId == "Subscribe" ? " of every entry (one forbidden provider refuses the whole subscription)." : ".");
            operation.Responses ??= [];
            operation.Responses.TryAdd("401", new OpenApiResponse());
            operation.Responses.TryAdd("403", new OpenApiResponse());
        }

        internal static OpenApiSecurityRequirement Bearer(OpenApiDocument document) => new()
        {
            [new OpenApiSecuritySchemeReference(BearerSchemeName, document)] = [],
        };

        private static void Describe(OpenApiResponse response, string? id, string status, OperationFilterContext context)
        {
            if (status is "200" or "304" && id is "Subscribe" or "GetService")
            {
                response.Headers ??= new Dictionary<string, IOpenApiHeader>();
                response.Headers["ETag"] = new OpenApiHeader
                {
                    Description = "`\"<version>\"`: the answer's version as an entity tag.",
                    Schema = new OpenApiSchema { Type = JsonSchemaType.String },
                };
                response.Headers["X-Registry-Stale"] = new OpenApiHeader
                {
                    Description = "`true` when the node answers from memory while cut off from the database; the answer is then as of `Age` seconds ago, " +
                        "and an HTTP/1.1 connection is closed after it (`Connection: close`), so a client behind a load balancer reaches a node again through it.",
                    Schema = new OpenApiSchema { Type = JsonSchemaType.String },
                };
                response.Headers["Age"] = new OpenApiHeader
                {
                    Description = "With `X-Registry-Stale`: whole seconds since the node last knew the database's state (rounded down).",
                    Schema = new OpenApiSchema { Type = JsonSchemaType.Integer },
                };
            }

            if (status == "200" && id == "OpenSession")
            {
                response.Headers ??= new Dictionary<string, IOpenApiHeader>();
                response.Headers[SessionKeeper.KeepAliveHeader] = new OpenApiHeader
                {
                    Description = "Seconds between the stream's keep-alive comments (Registry:Sessions:KeepAliveSeconds, or a third of `ttl` if shorter): a client that hears " +
                        "nothing for a few of them can take the connection for lost and open the session again.",
                    Schema = new OpenApiSchema { Type = JsonSchemaType.Integer },
                };
            }

            if (status == "401")
            {
                response.Headers ??= new Dictionary<string, IOpenApiHeader>();
                response.Headers["WWW-Authenticate"] = new OpenApiHeader
                {
                    Description = "`Bearer`: send `Authorization: Bearer <token>`.",
                    Schema = new OpenApiSchema { Type = JsonSchemaType.String },
                };
            }

            if (status is "503" or "429")
            {
                response.Headers ??= new Dictionary<string, IOpenApiHeader>();
                response.Headers["Retry-After"] = new OpenApiHeader
                {
                    Description = "Seconds to wait before retrying.",
                    Schema = new OpenApiSchema { Type = JsonSchemaType.Integer },
                };
            }

            var example = (id, status) switch
            {
                ("Register" or "Heartbeat", "200" or "201") => LeaseExample,
                ("OpenSession", "200") => SessionExample,
                ("Subscribe" or "GetService", "200") => AnswerExample,
                ("ListServices", "200") => ServicesExample,
                ("Unregister", "200") => DrainExample,
                ("GetWatchers", "200") => WatchersExample,
                ("CreateToken", "201") => TokenExample,
                (_, "400") => ValidationProblemExample,
                _ => null,
            };

            // Every error is a problem document: make sure the schema says so even where an
            // endpoint declared only the status.
            if (status.Length == 3 && status[0] is '4' or '5' && id != "Ready")
            {
                var schemaName = status == "400" ? "HttpValidationProblemDetails" : "ProblemDetails";
                response.Content = new Dictionary<string, OpenApiMediaType>(StringComparer.Ordinal)
                {
                    ["application/problem+json"] = new OpenApiMediaType { Schema = new OpenApiSchemaReference(schemaName, context.Document) },
                };
            }

            if (example is not null)
            {
                foreach (var media in response.Content?.Values ?? [])
                {
                    media.Example = JsonNode.Parse(example);
                }
            }
        }
    }

    /// <summary>Adds <c>/metrics</c>, which is mapped as middleware and so unseen by the API explorer.</summary>
    internal sealed class RegistryDocumentFilter : IDocumentFilter
    {
        private static OpenApiResponse Problem(OpenApiDocument document, string description) => new()
        {
            Description = description,
            Content = new Dictionary<string, OpenApiMediaType>(StringComparer.Ordinal)
            {
                ["application/problem+json"] = new OpenApiMediaType { Schema = new OpenApiSchemaReference("ProblemDetails", document) },
            },
        };

        public void Apply(OpenApiDocument swaggerDoc, DocumentFilterContext context)
        {
            // Every operation says what it needs; this default covers anything added later.
            swaggerDoc.Security = [RegistryOperationFilter.Bearer(swaggerDoc)];
            swaggerDoc.Paths ??= [];
            swaggerDoc.Paths[MetricsEndpoint.Path] = new OpenApiPathItem
            {
                Operations = new Dictionary<HttpMethod, OpenApiOperation>
                {
                    [HttpMethod.Get] = new OpenApiOperation
                    {
                        Tags = new HashSet<OpenApiTagReference> { new("Operations", swaggerDoc) },
                        OperationId = "Metrics",
                        // Open unless Registry:Auth:ProtectMetrics; then it needs the admin scope.
                        Security = [new OpenApiSecurityRequirement(), RegistryOperationFilter.Bearer(swaggerDoc)],
                        Summary = "Metrics in Prometheus text format",
                        Description = "The registry's instruments (meter `Registry`: registrations, heartbeats, evictions, parked and " +
                            "completed long polls, delivery delay, change-feed notifications and reconnects, database errors) and " +
                            "ASP.NET Core's request and connection meters, for a Prometheus scrape. Open unless " +
                            "`Registry:Auth:ProtectMetrics` is true; then it needs the `admin` scope.",
                        Responses = new OpenApiResponses
                        {
                            ["200"] = new OpenApiResponse
                            {
                                Description = "The current values, in Prometheus text exposition format 0.0.4.",
                                Content = new Dictionary<string, OpenApiMediaType>(StringComparer.Ordinal)
                                {
                                    ["text/plain"] = new OpenApiMediaType { Schema = new OpenApiSchema { Type = JsonSchemaType.String } },
                                },
                            },
                            ["401"] = Problem(swaggerDoc, "With `Registry:Auth:ProtectMetrics`: no valid credential; `WWW-Authenticate: Bearer`."),
                            ["403"] = Problem(swaggerDoc, "With `Registry:Auth:ProtectMetrics`: the credential lacks the `admin` scope."),
                        },
                    },
                },
            };
        }
    }
}
