using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Registry.Model;

/// <summary>
/// Says in the API's words why the serializer refused a request document: the field from
/// <see cref="JsonException.Path"/>, the reason from what the body holds there measured against
/// the bound type's contract (kind, nullability, required and known members). The serializer's
/// own messages name .NET types and constructor parameters, so they are not shown to a caller.
/// Runs only for a refused body; binding itself is the serializer's.
/// </summary>
internal static class JsonProblem
{
    private static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = RequestJson.MaxDepth };

    public static void Explain(JsonException exception, ReadOnlyMemory<byte> body, JsonTypeInfo type, Errors errors)
    {
        var path = JsonPath.Segments(exception.Path);
        if (exception.InnerException is JsonException)
        {
            // The reader's own exception: the body is not JSON at that point.
            errors.Add(JsonPath.Field(path, path.Count), NotJson(exception));
            return;
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body, DocumentOptions);
        }
        catch (JsonException e)
        {
            // The serializer stopped at an earlier problem; a later one makes it no JSON at all.
            errors.Add("$", NotJson(e));
            return;
        }

        using (document)
        {
            try
            {
                var (field, reason) = Locate(document.RootElement, type, path);
                errors.Add(field, reason);
            }
            catch (InvalidOperationException)
            {
                // Text that is not Unicode in a place not foreseen above: still the client's input, still a 400.
                errors.Add(JsonPath.Field(path, path.Count), "is not valid Unicode text");
            }
        }
    }

    private static (string Field, string Reason) Locate(JsonElement element, JsonTypeInfo type, List<JsonPath.Segment> path)
    {
        for (var depth = 0; depth < path.Count; depth++)
        {
            var segment = path[depth];
            var here = JsonPath.Field(path, depth + 1);
            if (segment.Name is null)
            {
                if (element.ValueKind != JsonValueKind.Array || segment.Index >= element.GetArrayLength() || type.ElementType is null)
                {
                    return Describe(element, type, JsonPath.Field(path, depth));
                }

                element = element[segment.Index];
                type = type.Options.GetTypeInfo(type.ElementType);
                continue;
            }

            if (element.ValueKind != JsonValueKind.Object)
            {
                return Describe(element, type, JsonPath.Field(path, depth));
            }

            if (HasUnreadableName(element))
            {
                // The serializer's path stops at the last name it could read (or holds U+FFFD for it).
                return (JsonPath.Field(path, depth), UnreadableName);
            }

            var (count, value) = Find(element, segment.Name);
            if (count > 1)
            {
                return (here, "appears more than once");
            }

            var member = Member(type, segment.Name);
            if (member is null)
            {
                return (here, $"is not a field here; the fields are {string.Join(", ", type.Properties.Select(p => p.Name))}");
            }

            if (count == 0)
            {
                return (here, "cannot be read");
            }

            element = value;
            type = member;
        }

        return Describe(element, type, JsonPath.Field(path, path.Count));
    }

    /// <summary>What is wrong with the value the serializer stopped at.</summary>
    private static (string Field, string Reason) Describe(JsonElement element, JsonTypeInfo type, string field)
    {
        var expected = Expected(type);
        if (!Fits(element.ValueKind, type))
        {
            return (field, element.ValueKind == JsonValueKind.Null
                ? $"must not be null; expected {expected}"
                : $"must be {expected}, not {Kind(element.ValueKind)}");
        }

        if (element.ValueKind == JsonValueKind.Object)
        {
            if (HasUnreadableName(element))
            {
                return (field, UnreadableName);
            }

            var missing = type.Kind == JsonTypeInfoKind.Object
                ? type.Properties.FirstOrDefault(p => p.IsRequired && !element.TryGetProperty(p.Name, out _))
                : null;
            if (missing is not null)
            {
                return (field == "$" ? missing.Name : $"{field}.{missing.Name}", "is required");
            }
        }

        if (element.ValueKind == JsonValueKind.String && !IsReadable(element))
        {
            return (field, "is not valid Unicode text");
        }

        return (field, $"cannot be read as {expected}");
    }

    internal const string UnreadableName = "holds a member name that is not valid UTF-8 or Unicode text";

    internal static string NotJson(JsonException e) =>
        $"is not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1})";

    private static JsonTypeInfo? Member(JsonTypeInfo type, string name) => type.Kind switch
    {
        JsonTypeInfoKind.Object => type.Properties.FirstOrDefault(p => p.Name == name) is { } property
            ? type.Options.GetTypeInfo(property.PropertyType)
            : null,
        JsonTypeInfoKind.Dictionary => type.Options.GetTypeInfo(type.ElementType!),
        _ => null,
    };

    private static (int Count, JsonElement First) Find(JsonElement element, string name)
    {
        var count = 0;
        JsonElement first = default;
        foreach (var property in element.EnumerateObject())
        {
            if (IsName(property, name) && count++ == 0)
            {
                first = property.Value;
            }
        }

        return (count, first);
    }

    private static bool IsName(JsonProperty property, string name)
    {
        try
        {
            return property.NameEquals(name);
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private static bool HasUnreadableName(JsonElement element)
    {
        foreach (var property in element.EnumerateObject())
        {
            try
            {
                _ = property.Name;
            }
            catch (InvalidOperationException)
            {
                return true;
            }
        }

        return false;
    }

    private static bool IsReadable(JsonElement element)
    {
        try
        {
            _ = element.GetString();
            return true;
        }
        catch (InvalidOperationException)
        {
            // A lone surrogate escape such as "\ud800", or bytes that are not UTF-8.
            return false;
        }
    }

    private static bool Fits(JsonValueKind kind, JsonTypeInfo type) => type.Kind switch
    {
        JsonTypeInfoKind.Object or JsonTypeInfoKind.Dictionary => kind == JsonValueKind.Object,
        JsonTypeInfoKind.Enumerable => kind == JsonValueKind.Array,
        _ => type.Type != typeof(string) || kind == JsonValueKind.String,
    };

    private static string Expected(JsonTypeInfo type) => type.Kind switch
    {
        JsonTypeInfoKind.Object => "a JSON object",
        JsonTypeInfoKind.Dictionary => "an object of string values",
        JsonTypeInfoKind.Enumerable => "an array",
        _ => type.Type == typeof(string) ? "a string" : type.Type.Name,
    };

    private static string Kind(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };
}
