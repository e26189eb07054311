namespace Registry.Model;

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
