using System.Globalization;
using Registry.Model;

namespace Registry.Drain;

/// <summary>
/// The drain channel's payloads, words separated by spaces (ids, names, protocols, addresses
/// and versions hold none):
/// <c>ask ID SECONDS APPLICATION PROTOCOL ADDR</c> (a drain's question),
/// <c>report ID NODE DELIVERED PENDING</c> (a node's counts for it),
/// <c>watch ID APPLICATION</c> (the watchers question) and
/// <c>watchers ID NODE MORE VERSION=COUNT;…</c> (a node's answer, in parts when long; MORE is 1
/// on every part but the last). Questions go on the shared channel; answers on the asker's own.
/// </summary>
internal static class DrainMessages
{
    private static readonly System.Buffers.SearchValues<char> NodeIdCharacters = System.Buffers.SearchValues.Create("0123456789abcdef");

    /// <summary>
    /// The channel a node hears the answers to its own questions on, beside the shared one that every node hears the
    /// questions on: an answer goes to the asker alone, not to every node (a question to N nodes would otherwise cost
    /// N² deliveries, each read on a change feed).
    /// </summary>
    public static string ReplyChannelOf(string node) => $"{DrainMessenger.Channel}_{node}";

    /// <summary>
    /// Where the answers to question <paramref name="id"/> go: its asker's own channel when the id names it
    /// (<c>NODE.RANDOM</c>), else the shared channel (the question of a node that does not listen on one of its own).
    /// </summary>
    public static string ReplyChannel(string id) =>
        id.IndexOf('.', StringComparison.Ordinal) is > 0 and <= 32 and var dot && !id.AsSpan(0, dot).ContainsAnyExcept(NodeIdCharacters)
            ? ReplyChannelOf(id[..dot])
            : DrainMessenger.Channel;

    public static string Ask(string id, int seconds, InstanceKey key) =>
        string.Create(CultureInfo.InvariantCulture, $"ask {id} {seconds} {key.Application} {key.Protocol} {key.Addr}");

    public static string Report(string id, string node, int delivered, int pending) =>
        string.Create(CultureInfo.InvariantCulture, $"report {id} {node} {delivered} {pending}");

    public static string Watch(string id, string application) => $"watch {id} {application}";

    /// <summary>A node's watchers in as many payloads as they need.</summary>
    public static IEnumerable<string> Watchers(string id, string node, Dictionary<string, int> versions)
    {
        var pairs = versions.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Key}={p.Value}")).ToList();
        var head = $"watchers {id} {node} ";
        var part = new List<string>();
        var length = head.Length + 2;
        foreach (var pair in pairs)
        {
            if (length + pair.Length + 1 > DrainMessenger.MaxPayloadBytes && part.Count > 0)
            {
                yield return head + "1 " + string.Join(';', part);
                part.Clear();
                length = head.Length + 2;
            }

            part.Add(pair);
            length += pair.Length + 1;
        }

        yield return head + "0 " + string.Join(';', part);
    }

    /// <summary>The words of a payload; null when it is not one of ours.</summary>
    public static string[]? Words(string payload)
    {
        var words = payload.Split(' ');
        return words[0] switch
        {
            "ask" when words.Length == 6 => words,
            "report" when words.Length == 5 => words,
            "watch" when words.Length == 3 => words,
            "watchers" when words.Length is 4 or 5 => words,
            _ => null,
        };
    }

    public static int Number(string word) =>
        int.TryParse(word, NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : 0;

    /// <summary>Parses the VERSION=COUNT list of a watchers part.</summary>
    public static IEnumerable<(string Version, int Count)> Versions(string list) =>
        list.Split(';', StringSplitOptions.RemoveEmptyEntries)
            .Select(pair => pair.Split('='))
            .Where(pair => pair.Length == 2)
            .Select(pair => (pair[0], Number(pair[1])));
}
