using System.Text.Json;

namespace Registry.Model;

/// <summary>Meta as stored in the <c>jsonb</c> column: a flat object of strings.</summary>
internal static class MetaJson
{
    public static string Serialize(Meta meta)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            foreach (var (key, value) in meta.Pairs)
            {
                writer.WriteString(key, value);
            }

            writer.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    public static Meta Parse(string json)
    {
        if (json is "{}" or "")
        {
            return Meta.Empty;
        }

        using var document = JsonDocument.Parse(json);
        return Meta.From(document.RootElement.EnumerateObject()
            .Select(p => new KeyValuePair<string, string>(p.Name, p.Value.GetString() ?? "")));
    }
}
