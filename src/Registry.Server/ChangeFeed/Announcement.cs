using System.Text;
using Registry.Model;

namespace Registry.ChangeFeed;

/// <summary>
/// The payload of a change notification: the application, followed by the changed instances
/// (<c>protocol addr</c>, one a line) when they fit, so that nodes reload those rows instead
/// of the whole application. Without the lines a node reloads the whole application. Names,
/// protocols and addresses cannot contain spaces or line breaks, so the format is unambiguous.
/// </summary>
internal static class Announcement
{
    /// <summary>Below PostgreSQL's 8,000-byte payload limit, with room to spare.</summary>
    private const int MaxPayloadBytes = 7_900;

    public static string For(string application, IEnumerable<InstanceKey> keys)
    {
        var payload = new StringBuilder(application);
        foreach (var key in keys)
        {
            payload.Append('\n').Append(key.Protocol).Append(' ').Append(key.Addr);
            if (payload.Length > MaxPayloadBytes)
            {
                // Too many to list (all ASCII, so characters are bytes): announce the application.
                return application;
            }
        }

        return payload.ToString();
    }

    /// <summary>The application and, when listed, the changed instances.</summary>
    public static (string Application, InstanceKey[]? Keys) Parse(string payload)
    {
        var lines = payload.Split('\n');
        if (lines.Length == 1)
        {
            return (payload, null);
        }

        var application = lines[0];
        var keys = new List<InstanceKey>(lines.Length - 1);
        foreach (var line in lines.AsSpan(1))
        {
            var space = line.IndexOf(' ', StringComparison.Ordinal);
            if (space <= 0)
            {
                return (application, null); // not ours to understand: reload the application
            }

            keys.Add(new InstanceKey(application, line[..space], line[(space + 1)..]));
        }

        return (application, keys.ToArray());
    }
}
