using System.Text.Json;
using System.Text.Json.Serialization;

namespace Registry.Client;

/// <summary>
/// A problem document (RFC 9457, <c>application/problem+json</c>) as the registry sends it with every
/// error: <see cref="Title"/> and <see cref="Detail"/> say what is wrong, <see cref="Errors"/> names the
/// fields of a <c>400</c>, and <see cref="Extensions"/> holds the rest (e.g. the application and scope of a <c>403</c>).
/// </summary>
public sealed class RegistryProblem
{
    /// <summary>Creates a problem document.</summary>
    [JsonConstructor]
    public RegistryProblem(string? type, string? title, int? status, string? detail, string? instance)
    {
        Type = type;
        Title = title;
        Status = status;
        Detail = detail;
        Instance = instance;
    }

    /// <summary>A URI naming the kind of problem.</summary>
    [JsonPropertyName("type")]
    public string? Type { get; }

    /// <summary>A short summary of the kind of problem.</summary>
    [JsonPropertyName("title")]
    public string? Title { get; }

    /// <summary>The HTTP status.</summary>
    [JsonPropertyName("status")]
    public int? Status { get; }

    /// <summary>What went wrong with this request.</summary>
    [JsonPropertyName("detail")]
    public string? Detail { get; }

    /// <summary>A URI naming this occurrence.</summary>
    [JsonPropertyName("instance")]
    public string? Instance { get; }

    /// <summary>Validation errors by field (a <c>400</c>'s <c>errors</c> member), empty when none.</summary>
    [JsonIgnore]
    public IReadOnlyDictionary<string, string[]> Errors { get; private set; } = new Dictionary<string, string[]>(StringComparer.Ordinal);

    /// <summary>Every other member of the document, as sent.</summary>
    [JsonExtensionData]
    public IDictionary<string, JsonElement> Extensions { get; init; } = new Dictionary<string, JsonElement>(StringComparer.Ordinal);

    /// <inheritdoc />
    public override string ToString() => string.Join(": ", new[] { Title, Detail }.Where(s => !string.IsNullOrEmpty(s)));

    /// <summary>Reads a problem document; <see langword="null"/> when the body is not one (a proxy's error page).</summary>
    internal static RegistryProblem? TryParse(string body)
    {
        if (string.IsNullOrWhiteSpace(body))
        {
            return null;
        }

        try
        {
            var problem = JsonSerializer.Deserialize(body, ClientJson.Default.RegistryProblem);
            if (problem is null)
            {
                return null;
            }

            if (problem.Extensions.TryGetValue("errors", out var errors) && errors.ValueKind == JsonValueKind.Object)
            {
                problem.Errors = errors.EnumerateObject().ToDictionary(
                    e => e.Name,
                    e => e.Value.ValueKind == JsonValueKind.Array ? e.Value.EnumerateArray().Select(v => v.ToString()).ToArray() : [e.Value.ToString()],
                    StringComparer.Ordinal);
            }

            return problem;
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
