using System.Globalization;
using System.Text;

namespace Registry.Model;

/// <summary>The serializer's <see cref="System.Text.Json.JsonException.Path"/> as the API's field names.</summary>
internal static class JsonPath
{
    /// <summary>A field name in the API's form (<c>subscribes[0].meta.k</c>; the document itself is <c>$</c>).</summary>
    public static string Field(List<Segment> path, int count)
    {
        if (count == 0)
        {
            return "$";
        }

        var field = new StringBuilder();
        for (var i = 0; i < count; i++)
        {
            if (path[i].Name is { } name)
            {
                field.Append(i == 0 ? "" : ".").Append(name);
            }
            else
            {
                field.Append('[').Append(path[i].Index).Append(']');
            }
        }

        return field.ToString();
    }

    /// <summary>Splits a serializer path: <c>$</c>, then <c>.name</c>, <c>['odd name']</c> or <c>[index]</c> steps.</summary>
    public static List<Segment> Segments(string? path)
    {
        var segments = new List<Segment>();
        if (path is null || !path.StartsWith('$'))
        {
            return segments;
        }

        var i = 1;
        while (i < path.Length)
        {
            if (path[i] == '.')
            {
                var end = path.IndexOfAny(['.', '['], i + 1);
                end = end < 0 ? path.Length : end;
                segments.Add(new Segment(path[(i + 1)..end], 0));
                i = end;
            }
            else if (path.AsSpan(i).StartsWith("['"))
            {
                // Names with special characters are quoted, with ' escaped as \'.
                var name = new StringBuilder();
                var j = i + 2;
                for (; j < path.Length && !(path[j] == '\'' && j + 1 < path.Length && path[j + 1] == ']'); j++)
                {
                    j += path[j] == '\\' && j + 1 < path.Length && path[j + 1] == '\'' ? 1 : 0;
                    name.Append(path[j]);
                }

                segments.Add(new Segment(name.ToString(), 0));
                i = j + 2;
            }
            else if (path[i] == '[' && path.IndexOf(']', i) is var close and > 0
                && int.TryParse(path.AsSpan(i + 1, close - i - 1), CultureInfo.InvariantCulture, out var index))
            {
                segments.Add(new Segment(null, index));
                i = close + 1;
            }
            else
            {
                break;
            }
        }

        return segments;
    }

    /// <summary>One step of a path: a member name, or an array index when the name is null.</summary>
    public readonly record struct Segment(string? Name, int Index);
}
