using System.Runtime.CompilerServices;

namespace Registry.Model;

/// <summary>
/// Shares equal short strings among the rows of one load: application names, protocols and
/// meta keys and values repeat across instances. A full load keeps every row it reads, so each
/// string it need not keep is one the garbage collector need not copy while the load runs, and
/// memory the node does not hold afterwards. Lives as long as the load; long strings (rarely
/// repeated) are not pooled.
/// </summary>
internal sealed class StringPool
{
    /// <summary>The longest string pooled, in chars.</summary>
    public const int MaxLength = 64;

    private readonly Dictionary<string, string> _strings = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string>.AlternateLookup<ReadOnlySpan<char>> _lookup;

    public StringPool() => _lookup = _strings.GetAlternateLookup<ReadOnlySpan<char>>();

    /// <summary>The pooled string equal to <paramref name="value"/> (which becomes it if none was).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public string Get(string value)
    {
        if (value.Length > MaxLength)
        {
            return value;
        }

        if (_strings.TryGetValue(value, out var pooled))
        {
            return pooled;
        }

        _strings.Add(value, value);
        return value;
    }

    /// <summary>The pooled string equal to <paramref name="chars"/>, allocated only the first time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public string Get(ReadOnlySpan<char> chars)
    {
        if (chars.Length > MaxLength)
        {
            return chars.ToString();
        }

        if (_lookup.TryGetValue(chars, out var pooled))
        {
            return pooled;
        }

        var value = chars.ToString();
        _strings.Add(value, value);
        return value;
    }
}
