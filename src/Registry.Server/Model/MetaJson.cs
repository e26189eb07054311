using System.Buffers;
using System.Text;
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

    /// <summary>
    /// Reads the column's text with a forward-only reader: a full load parses every instance's
    /// meta, and a document object per row was most of a cold start's CPU after the query itself.
    /// </summary>
    public static Meta Parse(string json)
    {
        if (json is "{}" or "")
        {
            return Meta.Empty;
        }

        byte[]? rented = null;
        var maximum = Encoding.UTF8.GetMaxByteCount(json.Length);
        var utf8 = maximum <= StackLimit ? stackalloc byte[StackLimit] : (rented = ArrayPool<byte>.Shared.Rent(maximum));
        try
        {
            var reader = new Utf8JsonReader(utf8[..Encoding.UTF8.GetBytes(json, utf8)]);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                throw new JsonException($"Stored meta is not a JSON object (found {reader.TokenType}).");
            }

            var pairs = new List<KeyValuePair<string, string>>();
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var key = reader.GetString()!;
                reader.Read();
                pairs.Add(new(key, reader.TokenType == JsonTokenType.Null ? "" : reader.GetString()!));
            }

            return Meta.From(pairs);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    private const int StackLimit = 1024;
}
