using Npgsql;
using Registry.Model;

namespace Registry.Storage;

/// <summary>Instance keys as the three array parameters that hot statements <c>unnest</c>.</summary>
internal static class InstanceKeys
{
    /// <summary>Adds <c>@applications</c>, <c>@protocols</c> and <c>@addrs</c>, each name after <paramref name="prefix"/>.</summary>
    public static void AddParameters(NpgsqlParameterCollection parameters, IReadOnlyCollection<InstanceKey> keys, string prefix = "")
    {
        parameters.Add(new NpgsqlParameter<string[]>(prefix + "applications", keys.Select(k => k.Application).ToArray()));
        parameters.Add(new NpgsqlParameter<string[]>(prefix + "protocols", keys.Select(k => k.Protocol).ToArray()));
        parameters.Add(new NpgsqlParameter<string[]>(prefix + "addrs", keys.Select(k => k.Addr).ToArray()));
    }
}
