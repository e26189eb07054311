using Microsoft.Extensions.Options;
using Registry.Leases;
using Registry.Storage;

namespace Registry.Drain;

/// <summary>
/// The nodes to wait for: those of <c>nodes</c> that marked themselves alive within
/// <see cref="LeaseOptions.GraceGap"/> (so a node that died drops out within it) and had started
/// when a question was sent (a node that starts later never heard it).
/// </summary>
internal sealed class LiveNodes(RegistryDatabase database, IOptions<LeaseOptions> leases)
{
    /// <exception cref="System.Data.Common.DbException">The database cannot be read.</exception>
    public async Task<HashSet<string>> ReadAsync(DateTimeOffset askedAt, CancellationToken cancellationToken)
    {
        await using var command = database.DataSource.CreateCommand(
            $"SELECT id FROM {Schema.NodesTable} WHERE last_seen_at > clock_timestamp() - @silence AND started_at <= @asked");
        command.Parameters.AddWithValue("silence", leases.Value.GraceGap);
        command.Parameters.AddWithValue("asked", askedAt.UtcDateTime);
        var ids = new HashSet<string>(StringComparer.Ordinal);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            ids.Add(reader.GetString(0));
        }

        return ids;
    }
}
