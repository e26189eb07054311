using System.Buffers;
using System.Runtime.CompilerServices;
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
    /// The pairs are counted first, so the one array allocated is the one the meta keeps; keys
    /// and values repeated across the load's rows come from its <paramref name="pool"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static Meta Parse(string json, StringPool pool)
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

            var pairs = new KeyValuePair<string, string>[Count(reader)];
            for (var i = 0; i < pairs.Length; i++)
            {
                reader.Read();
                var key = Text(ref reader, pool);
                reader.Read();
                pairs[i] = new(key, reader.TokenType == JsonTokenType.Null ? "" : Text(ref reader, pool));
            }

            return Meta.FromOwned(pairs);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>The number of properties of the object the reader (a copy) has just entered.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int Count(Utf8JsonReader reader)
    {
        var count = 0;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            count++;
            reader.Skip(); // onto the value: the next read is the next name
        }

        return count;
    }

    /// <summary>The current string token; through the pool, without an allocation when it holds it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static string Text(ref Utf8JsonReader reader, StringPool pool)
    {
        if (reader.ValueIsEscaped || reader.ValueSpan.Length > StringPool.MaxLength)
        {
            return pool.Get(reader.GetString()!);
        }

        Span<char> chars = stackalloc char[StringPool.MaxLength];
        return pool.Get(chars[..Encoding.UTF8.GetChars(reader.ValueSpan, chars)]);
    }

    private const int StackLimit = 1024;
}
