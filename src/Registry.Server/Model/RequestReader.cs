using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using Microsoft.Extensions.Options;

namespace Registry.Model;

/// <summary>
/// Reads the request documents of API.md: binds the body to its document type with strict
/// System.Text.Json options, then applies the registry's rules. Every problem is reported under
/// the name of the field it concerns, so a 400 tells the caller exactly what to fix; nothing
/// here throws for a client's input.
/// </summary>
internal sealed class RequestReader(IOptions<LimitsOptions> limits)
{
    private readonly RequestRules _rules = new(limits.Value);

    /// <summary>Reads a provider document (meta is optional; heartbeat and unregister ignore it).</summary>
    public Provider? ReadProvider(ReadOnlyMemory<byte> body, Errors errors) =>
        TryBind(body, RequestJson.Default.ProviderDocument, errors, out var document) ? _rules.Provider(document, errors) : null;

    /// <summary>Reads a subscription document.</summary>
    public IReadOnlyList<SubscriptionEntry>? ReadSubscription(ReadOnlyMemory<byte> body, Errors errors) =>
        TryBind(body, RequestJson.Default.SubscriptionDocument, errors, out var document) ? _rules.Subscription(document, errors) : null;

    /// <summary>Checks an application name given in a path or query.</summary>
    public string? CheckName(string? value, string field, Errors errors) =>
        value is null ? null : _rules.Name(value, field, errors);

    /// <summary>Checks a protocol given in a query.</summary>
    public string? CheckProtocol(string value, string field, Errors errors) => _rules.Protocol(value, field, errors);

    /// <summary>Checks a meta pair given in a query (<c>meta.KEY=VALUE</c>).</summary>
    public bool CheckMetaPair(string key, string value, string field, Errors errors) => _rules.MetaPair(key, value, field, errors);

    /// <summary>Checks a meta pair count given in a query.</summary>
    public bool CheckMetaCount(int count, string field, Errors errors) => _rules.MetaCount(count, field, errors);

    /// <summary>Checks a <c>version</c> given in a query.</summary>
    public string? CheckVersion(string? value, Errors errors, string field = "version") => _rules.Version(value, errors, field);

    private static bool TryBind<T>(ReadOnlyMemory<byte> body, JsonTypeInfo<T> type, Errors errors, out T? document)
    {
        document = default;
        if (body.IsEmpty)
        {
            errors.Add("$", "the request body is empty; a JSON document is required");
            return false;
        }

        try
        {
            document = JsonSerializer.Deserialize(body.Span, type);
            return true;
        }
        catch (JsonException e)
        {
            JsonProblem.Explain(e, body, type, errors);
            return false;
        }
    }
}

/// <summary>
/// The serializer contract of the request documents, generated at build time. Strict as API.md
/// asks: unknown members, a member given twice and <c>null</c> where the type does not allow it
/// are refused (the documents have no constructor parameters, so required-ness comes from
/// their <c>required</c> members).
/// </summary>
[JsonSourceGenerationOptions(
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    AllowDuplicateProperties = false,
    RespectNullableAnnotations = true,
    MaxDepth = MaxDepth)]
[JsonSerializable(typeof(ProviderDocument))]
[JsonSerializable(typeof(SubscriptionDocument))]
internal sealed partial class RequestJson : JsonSerializerContext
{
    /// <summary>The deepest nesting read; the documents need three levels.</summary>
    public const int MaxDepth = 16;
}
