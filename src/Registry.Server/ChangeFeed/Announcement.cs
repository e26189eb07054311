using Registry.Model;

namespace Registry.ChangeFeed;

/// <summary>
/// The payload of a change notification: the application, followed by the changed instances
/// (<c>protocol addr</c>, one a line) when they fit, so that nodes reload those rows instead
/// of the whole application. Without the lines a node reloads the whole application. Names,
/// protocols and addresses cannot contain spaces or line breaks, so the format is unambiguous.
/// The statements that change rows build it in SQL (the write batch and the sweeper).
/// </summary>
internal static class Announcement
{
    /// <summary>Below PostgreSQL's 8,000-byte payload limit, with room to spare.</summary>
    public const int MaxPayloadBytes = 7_900;

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
