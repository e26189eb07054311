using System.Text.Json;

namespace Registry.Client;

/// <summary>
/// A problem document (RFC 9457, <c>application/problem+json</c>) as the registry sends it with every
/// error: <see cref="Title"/> and <see cref="Detail"/> say what is wrong, <see cref="Errors"/> names the
/// fields of a <c>400</c>, and <see cref="Extensions"/> holds the rest (e.g. the application and scope of a <c>403</c>).
/// </summary>
public sealed class RegistryProblem
{
    /// <summary>Creates a problem document.</summary>
    public RegistryProblem(string? type, string? title, int? status, string? detail, string? instance)
    {
        Type = type;
        Title = title;
        Status = status;
        Detail = detail;
        Instance = instance;
    }

    /// <summary>A URI naming the kind of problem.</summary>
    public string? Type { get; }

    /// <summary>A short summary of the kind of problem.</summary>
    public string? Title { get; }

    /// <summary>The HTTP status.</summary>
    public int? Status { get; }

    /// <summary>What went wrong with this request.</summary>
    public string? Detail { get; }

    /// <summary>A URI naming this occurrence.</summary>
    public string? Instance { get; }

    /// <summary>Validation errors by field (a <c>400</c>'s <c>errors</c> member), empty when none.</summary>
    public IReadOnlyDictionary<string, string[]> Errors { get; init; } = new Dictionary<string, string[]>(StringComparer.Ordinal);

    /// <summary>Every other member of the document, as sent (e.g. <c>application</c> and <c>scope</c> of a <c>403</c>).</summary>
    public IReadOnlyDictionary<string, JsonElement> Extensions { get; init; } = new Dictionary<string, JsonElement>(StringComparer.Ordinal);

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
            using var document = JsonDocument.Parse(body);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                return null;
            }

            string? type = null, title = null, detail = null, instance = null;
            int? status = null;
            var errors = new Dictionary<string, string[]>(StringComparer.Ordinal);
            var extensions = new Dictionary<string, JsonElement>(StringComparer.Ordinal);
            foreach (var member in document.RootElement.EnumerateObject())
            {
                switch (member.Name)
                {
                    case "type" when member.Value.ValueKind == JsonValueKind.String:
                        type = member.Value.GetString();
                        break;
                    case "title" when member.Value.ValueKind == JsonValueKind.String:
                        title = member.Value.GetString();
                        break;
                    case "detail" when member.Value.ValueKind == JsonValueKind.String:
                        detail = member.Value.GetString();
                        break;
                    case "instance" when member.Value.ValueKind == JsonValueKind.String:
                        instance = member.Value.GetString();
                        break;
                    // Only a number: a proxy's JSON may carry "status" as a word (a Kubernetes Status object: "Failure").
                    case "status" when member.Value.ValueKind == JsonValueKind.Number && member.Value.TryGetInt32(out var number):
                        status = number;
                        break;
                    case "errors" when member.Value.ValueKind == JsonValueKind.Object:
                        foreach (var field in member.Value.EnumerateObject())
                        {
                            errors[field.Name] = field.Value.ValueKind == JsonValueKind.Array
                                ? [.. field.Value.EnumerateArray().Select(v => v.ToString())]
                                : [field.Value.ToString()];
                        }

                        break;
                    default:
                        extensions[member.Name] = member.Value.Clone();
                        break;
                }
            }

            return new RegistryProblem(type, title, status, detail, instance) { Errors = errors, Extensions = extensions };
        }
#pragma warning disable CA1031 // Whatever this body is, it is not a problem document: reading it must never turn an answer into an exception.
        catch (Exception)
#pragma warning restore CA1031
        {
            return null;
        }
    }
}
