using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Options;

namespace Registry.Model;

/// <summary>
/// Reads and validates the request documents of API.md. Every problem is reported under
/// the name of the field it concerns (<c>meta.idc</c>, <c>subscribes[1].provider</c>), so a
/// 400 tells the caller exactly what to fix; nothing here throws for a client's input.
/// </summary>
internal sealed class RequestReader(IOptions<LimitsOptions> limits)
{
    private static readonly JsonDocumentOptions JsonOptions = new() { MaxDepth = 16 };
    private readonly LimitsOptions _limits = limits.Value;

    /// <summary>Reads a provider document (meta is optional; heartbeat and unregister ignore it).</summary>
    public Provider? ReadProvider(ReadOnlyMemory<byte> body, Errors errors)
    {
        using var document = Parse(body, errors);
        if (document is null || !ExpectObject(document.RootElement, "$", errors))
        {
            return null;
        }

        string? application = null, protocol = null, addr = null;
        Meta meta = Meta.Empty;
        foreach (var property in Properties(document.RootElement, "", errors))
        {
            switch (property.Name)
            {
                case "application":
                    application = ReadName(property.Value, "application", errors);
                    break;
                case "protocol":
                    protocol = ReadProtocol(property.Value, "protocol", errors);
                    break;
                case "addr":
                    addr = ReadAddr(property.Value, "addr", errors);
                    break;
                case "meta":
                    meta = ReadMeta(property.Value, "meta", errors) ?? Meta.Empty;
                    break;
                default:
                    errors.Add(property.Name, "is not a field of the provider document (application, protocol, addr, meta)");
                    break;
            }
        }

        Require(application, "application", errors);
        Require(protocol, "protocol", errors);
        Require(addr, "addr", errors);
        return errors.Any ? null : new Provider(application!, protocol!, addr!, meta);
    }

    /// <summary>Reads a subscription document.</summary>
    public IReadOnlyList<SubscriptionEntry>? ReadSubscription(ReadOnlyMemory<byte> body, Errors errors)
    {
        using var document = Parse(body, errors);
        if (document is null || !ExpectObject(document.RootElement, "$", errors))
        {
            return null;
        }

        List<SubscriptionEntry>? entries = null;
        var seen = false;
        foreach (var property in Properties(document.RootElement, "", errors))
        {
            if (property.Name != "subscribes")
            {
                errors.Add(property.Name, "is not a field of the subscription document (subscribes)");
                continue;
            }

            seen = true;
            entries = ReadEntries(property.Value, errors);
        }

        if (!seen)
        {
            errors.Add("subscribes", "is required");
        }

        return errors.Any ? null : entries;
    }

    private List<SubscriptionEntry>? ReadEntries(JsonElement value, Errors errors)
    {
        if (value.ValueKind != JsonValueKind.Array)
        {
            errors.Add("subscribes", Describe(value, "an array of subscription entries"));
            return null;
        }

        var count = value.GetArrayLength();
        if (count == 0)
        {
            errors.Add("subscribes", "must hold at least one entry");
            return null;
        }

        if (count > _limits.MaxSubscribes)
        {
            errors.Add("subscribes", $"holds {count} entries; at most {_limits.MaxSubscribes} are allowed");
            return null;
        }

        var entries = new List<SubscriptionEntry>(count);
        var index = 0;
        foreach (var item in value.EnumerateArray())
        {
            var path = $"subscribes[{index++}]";
            if (!ExpectObject(item, path, errors))
            {
                continue;
            }

            string? provider = null, protocol = null;
            Meta meta = Meta.Empty;
            foreach (var property in Properties(item, path + ".", errors))
            {
                var field = $"{path}.{property.Name}";
                switch (property.Name)
                {
                    case "provider":
                        provider = ReadName(property.Value, field, errors);
                        break;
                    case "protocol":
                        protocol = ReadProtocol(property.Value, field, errors);
                        break;
                    case "meta":
                        meta = ReadMeta(property.Value, field, errors) ?? Meta.Empty;
                        break;
                    default:
                        errors.Add(field, "is not a field of a subscription entry (provider, protocol, meta)");
                        break;
                }
            }

            Require(provider, path + ".provider", errors);
            if (provider is not null)
            {
                entries.Add(new SubscriptionEntry(provider, protocol, meta));
            }
        }

        return entries;
    }

    /// <summary>Checks an application name given in a path or query.</summary>
    public string? CheckName(string? value, string field, Errors errors) =>
        value is null ? null : CheckNameText(value, field, errors);

    /// <summary>Checks a protocol given in a query.</summary>
    public string? CheckProtocol(string value, string field, Errors errors) => CheckProtocolText(value, field, errors);

    /// <summary>Checks a meta pair given in a query (<c>meta.KEY=VALUE</c>).</summary>
    public bool CheckMetaPair(string key, string value, string field, Errors errors) =>
        CheckMetaKey(key, field, errors) & CheckMetaValue(value, field, errors);

    /// <summary>Checks a meta pair count given in a query.</summary>
    public bool CheckMetaCount(int count, string field, Errors errors)
    {
        if (count <= _limits.MaxMetaPairs)
        {
            return true;
        }

        errors.Add(field, $"has {count} pairs; at most {_limits.MaxMetaPairs} are allowed");
        return false;
    }

    /// <summary>Checks a <c>version</c> given in a query.</summary>
    public string? CheckVersion(string? value, Errors errors)
    {
        if (value is null)
        {
            return null;
        }

        if (value.Length > _limits.MaxVersionLength)
        {
            errors.Add("version", $"is {value.Length} characters long; at most {_limits.MaxVersionLength} are allowed");
            return null;
        }

        if (value.Any(char.IsControl))
        {
            errors.Add("version", "must not contain control characters");
            return null;
        }

        return value;
    }

    private static JsonDocument? Parse(ReadOnlyMemory<byte> body, Errors errors)
    {
        if (body.IsEmpty)
        {
            errors.Add("$", "the request body is empty; a JSON document is required");
            return null;
        }

        try
        {
            return JsonDocument.Parse(body, JsonOptions);
        }
        catch (JsonException e)
        {
            errors.Add("$", $"is not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1})");
            return null;
        }
    }

    private static bool ExpectObject(JsonElement value, string field, Errors errors)
    {
        if (value.ValueKind == JsonValueKind.Object)
        {
            return true;
        }

        errors.Add(field, Describe(value, "a JSON object"));
        return false;
    }

    /// <summary>The properties of an object, reporting any name given twice.</summary>
    private static IEnumerable<JsonProperty> Properties(JsonElement value, string prefix, Errors errors)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var property in value.EnumerateObject())
        {
            if (!seen.Add(property.Name))
            {
                errors.Add(prefix + property.Name, "appears more than once");
                continue;
            }

            yield return property;
        }
    }

    private static void Require(string? value, string field, Errors errors)
    {
        if (value is null && !errors.Has(field))
        {
            errors.Add(field, "is required");
        }
    }

    private static string Describe(JsonElement value, string expected) =>
        value.ValueKind == JsonValueKind.Null
            ? $"must not be null; expected {expected}"
            : $"must be {expected}, not {Kind(value.ValueKind)}";

    private static string Kind(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        _ => "null",
    };

    private static string? ReadString(JsonElement value, string field, Errors errors)
    {
        if (value.ValueKind != JsonValueKind.String)
        {
            errors.Add(field, Describe(value, "a string"));
            return null;
        }

        try
        {
            return value.GetString()!;
        }
        catch (InvalidOperationException)
        {
            // A lone surrogate escape such as "\ud800" is valid JSON but not Unicode text.
            errors.Add(field, "is not valid Unicode text");
            return null;
        }
    }

    private string? ReadName(JsonElement value, string field, Errors errors)
    {
        var text = ReadString(value, field, errors);
        return text is null ? null : CheckNameText(text, field, errors);
    }

    private string? ReadProtocol(JsonElement value, string field, Errors errors)
    {
        var text = ReadString(value, field, errors);
        return text is null ? null : CheckProtocolText(text, field, errors);
    }

    private static string? ReadAddr(JsonElement value, string field, Errors errors)
    {
        var text = ReadString(value, field, errors);
        if (text is null)
        {
            return null;
        }

        var reason = AddrProblem(text);
        if (reason is null)
        {
            return text;
        }

        errors.Add(field, reason);
        return null;
    }

    private Meta? ReadMeta(JsonElement value, string field, Errors errors)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            errors.Add(field, Describe(value, "an object of string values"));
            return null;
        }

        var pairs = new List<KeyValuePair<string, string>>();
        var ok = true;
        foreach (var property in Properties(value, field + ".", errors))
        {
            var path = $"{field}.{property.Name}";
            var text = ReadString(property.Value, path, errors);
            ok &= CheckMetaKey(property.Name, path, errors);
            if (text is null || !CheckMetaValue(text, path, errors))
            {
                ok = false;
                continue;
            }

            pairs.Add(new(property.Name, text));
        }

        ok &= CheckMetaCount(pairs.Count, field, errors);
        return ok ? Meta.From(pairs) : null;
    }

    private string? CheckNameText(string text, string field, Errors errors)
    {
        // ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ with the length configurable.
        if (text.Length == 0)
        {
            errors.Add(field, "must not be empty");
            return null;
        }

        if (text.Length > _limits.MaxApplicationLength)
        {
            errors.Add(field, $"is {text.Length} characters long; at most {_limits.MaxApplicationLength} are allowed");
            return null;
        }

        if (!char.IsAsciiLetterOrDigit(text[0]) || !text.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
        {
            errors.Add(field, "must start with a letter or digit and hold only letters, digits, '.', '_' and '-'");
            return null;
        }

        return text;
    }

    private string? CheckProtocolText(string text, string field, Errors errors)
    {
        // ^[a-z][a-z0-9+.-]{0,31}$ with the length configurable.
        if (text.Length == 0)
        {
            errors.Add(field, "must not be empty");
            return null;
        }

        if (text.Length > _limits.MaxProtocolLength)
        {
            errors.Add(field, $"is {text.Length} characters long; at most {_limits.MaxProtocolLength} are allowed");
            return null;
        }

        if (!char.IsAsciiLetterLower(text[0]) || !text.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '+' or '.' or '-'))
        {
            errors.Add(field, "must start with a lowercase letter and hold only lowercase letters, digits, '+', '.' and '-'");
            return null;
        }

        return text;
    }

    private bool CheckMetaKey(string key, string field, Errors errors)
    {
        if (key.Length == 0)
        {
            errors.Add(field, "meta keys must not be empty");
            return false;
        }

        if (key.Length > _limits.MaxMetaKeyLength)
        {
            errors.Add(field, $"the key is {key.Length} characters long; at most {_limits.MaxMetaKeyLength} are allowed");
            return false;
        }

        if (!key.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
        {
            errors.Add(field, "meta keys hold only letters, digits, '.', '_' and '-'");
            return false;
        }

        return true;
    }

    private bool CheckMetaValue(string value, string field, Errors errors)
    {
        var codePoints = CodePoints(value);
        if (codePoints > _limits.MaxMetaValueLength)
        {
            errors.Add(field, $"the value is {codePoints} characters long; at most {_limits.MaxMetaValueLength} are allowed");
            return false;
        }

        if (value.Any(char.IsControl))
        {
            errors.Add(field, "the value must not contain control characters");
            return false;
        }

        return true;
    }

    private static int CodePoints(string value)
    {
        var count = 0;
        foreach (var _ in value.EnumerateRunes())
        {
            count++;
        }

        return count;
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
        var port = addr[(colon + 1)..];
        if (port.Length > 5 || !port.All(char.IsAsciiDigit)
            || !int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var number) || number is < 1 or > 65535)
        {
            return "the port must be a number from 1 to 65535";
        }

        if (host[0] == '[')
        {
            return host.Length > 2 && host[^1] == ']'
                && IPAddress.TryParse(host.AsSpan(1, host.Length - 2), out var v6) && v6.AddressFamily == AddressFamily.InterNetworkV6
                && !host.Contains('%', StringComparison.Ordinal)
                ? null
                : "the host in brackets must be an IPv6 address";
        }

        if (host.Contains(':', StringComparison.Ordinal))
        {
            return "an IPv6 address must be in brackets, e.g. [::1]:8080";
        }

        return IsIPv4(host) || IsDnsName(host) ? null : Shape;
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

/// <summary>Validation errors keyed by field, in the shape of <c>ValidationProblemDetails.errors</c>.</summary>
internal sealed class Errors
{
    private readonly Dictionary<string, List<string>> _byField = new(StringComparer.Ordinal);

    public bool Any => _byField.Count > 0;

    public bool Has(string field) => _byField.ContainsKey(field);

    public void Add(string field, string reason)
    {
        if (!_byField.TryGetValue(field, out var reasons))
        {
            _byField[field] = reasons = [];
        }

        reasons.Add(reason);
    }

    public Dictionary<string, string[]> ToDictionary() =>
        _byField.ToDictionary(p => p.Key, p => p.Value.ToArray(), StringComparer.Ordinal);

    /// <summary>The first problem as one sentence, for the problem's <c>detail</c>.</summary>
    public string Summary()
    {
        var (field, reasons) = _byField.First();
        var more = _byField.Count > 1 ? $" (and {_byField.Count - 1} more)" : "";
        return $"{field}: {reasons[0]}{more}";
    }
}
