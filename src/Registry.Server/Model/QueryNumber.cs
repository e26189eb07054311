namespace Registry.Model;

/// <summary>Non-negative integer query parameters (<c>ttl</c>, <c>wait</c>), which are clamped rather than refused when large.</summary>
internal static class QueryNumber
{
    /// <summary>Parses a whole number ≥ <paramref name="minimum"/>; one too large for 64 bits reads as <see cref="long.MaxValue"/>.</summary>
    public static long? Read(string? raw, string field, long minimum, Errors errors)
    {
        if (raw is null)
        {
            return null;
        }

        var digits = raw.Trim();
        if (digits.Length == 0 || !digits.All(char.IsAsciiDigit))
        {
            errors.Add(field, minimum > 0 ? "must be a positive whole number of seconds" : "must be a non-negative whole number of seconds");
            return null;
        }

        var value = long.TryParse(digits, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var parsed)
            ? parsed
            : long.MaxValue;
        if (value < minimum)
        {
            errors.Add(field, $"must be at least {minimum}");
            return null;
        }

        return value;
    }
}
