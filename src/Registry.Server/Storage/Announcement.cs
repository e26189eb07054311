using Registry.Model;

namespace Registry.Storage;

/// <summary>
/// The payload of a change notification. Its first line is the application, followed by a
/// space and a tag when the change is one of a node's own write batches (so that node can
/// tell its own notifications from any other, whatever connection sent them); then the
/// changed instances (<c>protocol addr</c>, one a line) when they fit, so that nodes reload
/// those rows instead of the whole application. Without the lines a node reloads the whole
/// application. Names, protocols, addresses and tags cannot contain spaces or line breaks, so
/// the format is unambiguous. <see cref="NotifySql"/> is the one place SQL builds it.
/// </summary>
internal static class Announcement
{
    /// <summary>Below PostgreSQL's 8,000-byte payload limit, with room to spare.</summary>
    public const int MaxPayloadBytes = 7_900;

    /// <summary>The application, the tag when there is one, and, when listed, the changed instances.</summary>
    public static (string Application, string? Tag, InstanceKey[]? Keys) Parse(string payload)
    {
        var lines = payload.Split('\n');
        var head = lines[0];
        var space = head.IndexOf(' ', StringComparison.Ordinal);
        var application = space < 0 ? head : head[..space];
        var tag = space < 0 ? null : head[(space + 1)..];
        if (lines.Length == 1)
        {
            return (application, tag, null);
        }

        var keys = new List<InstanceKey>(lines.Length - 1);
        foreach (var line in lines.AsSpan(1))
        {
            var separator = line.IndexOf(' ', StringComparison.Ordinal);
            if (separator <= 0)
            {
                return (application, tag, null); // not ours to understand: reload the application
            }

            keys.Add(new InstanceKey(application, line[..separator], line[(separator + 1)..]));
        }

        return (application, tag, keys.ToArray());
    }

    /// <summary>The payload that announces <paramref name="keys"/> (all of one application), untagged; the application alone when they do not fit.</summary>
    public static string Payload(string application, IEnumerable<InstanceKey> keys)
    {
        var payload = new System.Text.StringBuilder(application);
        foreach (var key in keys)
        {
            payload.Append('\n').Append(key.Protocol).Append(' ').Append(key.Addr);
        }

        return System.Text.Encoding.UTF8.GetByteCount(payload.ToString()) <= MaxPayloadBytes ? payload.ToString() : application;
    }

    /// <summary>
    /// The SQL that announces one application's change: <c>pg_notify</c> with the payload built
    /// from the SQL expressions given (<paramref name="keys"/> is the lines of the changed
    /// instances, each starting with a line break; <paramref name="tag"/> may be null), falling
    /// back to the application alone when the lines do not fit.
    /// </summary>
    public static string NotifySql(string application, string keys, string? tag)
    {
        var head = tag is null ? application : $"{application} || ' ' || {tag}";
        return $"pg_notify('{Schema.ChangeChannel}', CASE WHEN octet_length({head}) + octet_length({keys}) <= {MaxPayloadBytes} " +
            $"THEN {head} || {keys} ELSE {head} END)";
    }

    /// <summary>The SQL aggregate of the changed instances' lines over rows with <c>protocol</c> and <c>addr</c>, in key order.</summary>
    public const string KeysSql = "string_agg(E'\\n' || protocol || ' ' || addr, '' ORDER BY protocol, addr)";
}
