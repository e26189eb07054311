using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Registry.Model;

/// <summary>
/// The registry's own rules for what a request may hold (API.md "Limits"): name and protocol
/// patterns, <c>addr</c>, meta and version limits. Applied to documents the serializer has
/// already bound (so their shape is right) and to query parameters. Every problem is reported
/// under the name of the field it concerns (<c>meta.idc</c>, <c>subscribes[1].provider</c>).
/// Lengths are counted in Unicode code points.
/// </summary>
internal sealed class RequestRules(LimitsOptions limits)
{
    /// <summary>The provider a bound provider document describes, or null when it breaks a rule.</summary>
    public Provider? Provider(ProviderDocument? document, Errors errors)
    {
        if (document is null)
        {
            errors.Add("$", NotNull("a JSON object"));
            return null;
        }

        var application = Name(document.Application, "application", errors);
        var protocol = Protocol(document.Protocol, "protocol", errors);
        var addr = Addr(document.Addr, "addr", errors);
        var meta = Meta(document.Meta, "meta", errors);
        return errors.Any ? null : new Provider(application!, protocol!, addr!, meta!);
    }

    /// <summary>The entries of a bound subscription document, or null when one breaks a rule.</summary>
    public IReadOnlyList<SubscriptionEntry>? Subscription(SubscriptionDocument? document, Errors errors)
    {
        if (document is null)
        {
            errors.Add("$", NotNull("a JSON object"));
            return null;
        }

        var subscribes = document.Subscribes;
        if (subscribes.Count == 0)
        {
            errors.Add("subscribes", "must hold at least one entry");
            return null;
        }

        if (subscribes.Count > limits.MaxSubscribes)
        {
            errors.Add("subscribes", $"holds {subscribes.Count} entries; at most {limits.MaxSubscribes} are allowed");
            return null;
        }

        var entries = new List<SubscriptionEntry>(subscribes.Count);
        for (var i = 0; i < subscribes.Count; i++)
        {
            // The serializer does not apply nullability to the elements of a collection.
            var entry = subscribes[i];
            var path = $"subscribes[{i}]";
            if (entry is null)
            {
                errors.Add(path, NotNull("a JSON object"));
                continue;
            }

            var provider = Name(entry.Provider, path + ".provider", errors);
            var protocol = entry.Protocol is null ? null : Protocol(entry.Protocol, path + ".protocol", errors);
            var meta = Meta(entry.Meta, path + ".meta", errors);
            if (provider is not null && meta is not null)
            {
                entries.Add(new SubscriptionEntry(provider, protocol, meta));
            }
        }

        if (!errors.Any && entries.Sum(e => e.Meta.Count) is var pairs && pairs > limits.MaxSubscriptionMetaPairs)
        {
            errors.Add("subscribes", $"select on {pairs} meta pairs in all; at most {limits.MaxSubscriptionMetaPairs} are allowed");
        }

        return errors.Any ? null : entries;
    }

    /// <summary>An application (or provider) name: <c>^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$</c>, the length configurable.</summary>
    public string? Name(string text, string field, Errors errors) =>
        Report(text, field, LengthProblem(text, limits.MaxApplicationLength) ?? NameProblem(text), errors);

    /// <summary>A protocol: <c>^[a-z][a-z0-9+.-]{0,31}$</c>, the length configurable.</summary>
    public string? Protocol(string text, string field, Errors errors) =>
        Report(text, field, LengthProblem(text, limits.MaxProtocolLength) ?? ProtocolProblem(text), errors);

    /// <summary>An <c>addr</c>: <c>host:port</c>.</summary>
    public static string? Addr(string text, string field, Errors errors) => Report(text, field, AddrProblem(text), errors);

    /// <summary>A meta object in canonical form; null when a pair breaks a rule. Omitted is empty.</summary>
    public Meta? Meta(IReadOnlyDictionary<string, string>? pairs, string field, Errors errors)
    {
        if (pairs is null || pairs.Count == 0)
        {
            return Model.Meta.Empty;
        }

        var ok = MetaCount(pairs.Count, field, errors);
        foreach (var (key, value) in pairs)
        {
            // The field's name is built only for a problem: this runs on every registration.
            var problem = MetaKeyProblem(key) ?? MetaValueProblem(value);
            ok &= problem is null || Check($"{field}.{key}", problem, errors);
        }

        return ok ? Model.Meta.From(pairs) : null;
    }

    /// <summary>A meta pair given in a query (<c>meta.KEY=VALUE</c>).</summary>
    public bool MetaPair(string key, string value, string field, Errors errors) =>
        Check(field, MetaKeyProblem(key) ?? MetaValueProblem(value), errors);

    /// <summary>The number of pairs in one meta object.</summary>
    public bool MetaCount(int count, string field, Errors errors) =>
        Check(field, count > limits.MaxMetaPairs ? $"has {count} pairs; at most {limits.MaxMetaPairs} are allowed" : null, errors);

    /// <summary>A <c>version</c> given in a query or an <c>If-None-Match</c> header; null stays null.</summary>
    public string? Version(string? text, Errors errors, string field = "version")
    {
        if (text is null)
        {
            return null;
        }

        return Report(text, field, LengthProblem(text, limits.MaxVersionLength) ?? ControlProblem(text), errors);
    }

    /// <summary>Why <paramref name="addr"/> is not <c>host:port</c>, or null when it is.</summary>
    internal static string? AddrProblem(string addr)
    {
        const string Shape = "must be host:port with an IPv4 address, a bracketed IPv6 address or a DNS name, and a port 1-65535";
        var colon = addr.LastIndexOf(':');
        if (colon <= 0 || colon == addr.Length - 1)
        {
            return Shape;
        }

        var host = addr[..colon];
        var port = addr.AsSpan(colon + 1);
        if (port.Length > 5 || port.ContainsAnyExceptInRange('0', '9')
            || !int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var number) || number is < 1 or > 65535)
        {
            return "the port must be a number from 1 to 65535";
        }

        // Else "h:0080" would be a second instance of "h:80", which an unregistration of "h:80" leaves behind.
        if (port[0] == '0')
        {
            return "the port must be written without leading zeros";
        }

        if (host[0] == '[')
        {
            // IPAddress.TryParse takes "[::1]:99" and "[::1]" too: nothing but the address may be inside the brackets.
            return host.Length > 2 && host[^1] == ']'
                && host.AsSpan(1, host.Length - 2).IndexOfAny('[', ']', '%') < 0
                && IPAddress.TryParse(host.AsSpan(1, host.Length - 2), out var v6) && v6.AddressFamily == AddressFamily.InterNetworkV6
                ? null
                : "the host in brackets must be an IPv6 address";
        }

        if (host.Contains(':', StringComparison.Ordinal))
        {
            return "an IPv6 address must be in brackets, e.g. [::1]:8080";
        }

        return IsIPv4(host) || IsDnsName(host) ? null : Shape;
    }

    private static string? Report(string text, string field, string? problem, Errors errors) =>
        Check(field, problem, errors) ? text : null;

    private static bool Check(string field, string? problem, Errors errors)
    {
        if (problem is null)
        {
            return true;
        }

        errors.Add(field, problem);
        return false;
    }

    private static string NotNull(string expected) => $"must not be null; expected {expected}";

    private static string? LengthProblem(string text, int maximum)
    {
        // Code points: a UTF-16 length over the limit may still be within it.
        var length = text.Length > maximum ? CodePoints(text) : text.Length;
        return length > maximum ? $"is {length} characters long; at most {maximum} are allowed" : null;
    }

    private static string? NameProblem(string text) =>
        text.Length == 0 ? "must not be empty"
        : !char.IsAsciiLetterOrDigit(text[0]) || !text.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-')
            ? "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'"
            : null;

    private static string? ProtocolProblem(string text) =>
        text.Length == 0 ? "must not be empty"
        : !char.IsAsciiLetterLower(text[0]) || !text.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '+' or '.' or '-')
            ? "must start with a lowercase letter and hold only lowercase letters, digits, '+', '.' and '-'"
            : null;

    private string? MetaKeyProblem(string key)
    {
        if (key.Length == 0)
        {
            return "meta keys must not be empty";
        }

        if (key.Length > limits.MaxMetaKeyLength)
        {
            return $"the key is {key.Length} characters long; at most {limits.MaxMetaKeyLength} are allowed";
        }

        return key.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-')
            ? null
            : "meta keys hold only letters, digits, '.', '_' and '-'";
    }

    private string? MetaValueProblem(string? value)
    {
        // The serializer does not apply nullability to dictionary values.
        if (value is null)
        {
            return NotNull("a string");
        }

        var length = value.Length > limits.MaxMetaValueLength ? CodePoints(value) : value.Length;
        if (length > limits.MaxMetaValueLength)
        {
            return $"the value is {length} characters long; at most {limits.MaxMetaValueLength} are allowed";
        }

        return ControlProblem(value) is null ? null : "the value must not contain control characters";
    }

    private static string? ControlProblem(string text) =>
        text.Any(char.IsControl) ? "must not contain control characters" : null;

    private static int CodePoints(string value)
    {
        var count = 0;
        foreach (var _ in value.EnumerateRunes())
        {
            count++;
        }

        return count;
    }

    private static bool IsIPv4(string host)
    {
        var parts = host.Split('.');
        return parts.Length == 4 && parts.All(p =>
            p.Length is >= 1 and <= 3 && p.All(char.IsAsciiDigit) && (p.Length == 1 || p[0] != '0')
            && int.Parse(p, NumberStyles.None, CultureInfo.InvariantCulture) <= 255);
    }

    private static bool IsDnsName(string host)
    {
        if (host.Length > 253)
        {
            return false;
        }

        var labels = host.Split('.');
        // An all-digit last label would make "1.2.3.999" a "name": that is a bad IPv4 address instead.
        return !labels[^1].All(char.IsAsciiDigit) && labels.All(label =>
            label.Length is >= 1 and <= 63 && label[0] != '-' && label[^1] != '-'
            && label.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_'));
    }
}
