using Npgsql;

namespace Registry.Leases;

/// <summary>
/// The grace rule: after any time in which heartbeats could not be recorded (the node's
/// start, a database outage) every lease is extended by its TTL before the sweeper evicts
/// again, so a registry-side fault never evicts a healthy fleet.
/// </summary>
internal sealed partial class LeaseGrace(ILogger<LeaseGrace> logger)
{
    // The node starts owing a grace period.
    private int _owed = 1;

    public bool Owed => Volatile.Read(ref _owed) == 1;

    /// <summary>Notes that heartbeats could not be recorded for a while.</summary>
    public void Require() => Volatile.Write(ref _owed, 1);

    /// <summary>Extends every lease by its TTL and clears the debt.</summary>
    public async Task ExtendAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(
            """
            UPDATE instances
               SET expires_at = clock_timestamp() + ttl_seconds * interval '1 second'
             WHERE expires_at < clock_timestamp() + ttl_seconds * interval '1 second'
            """, connection);
        var extended = await command.ExecuteNonQueryAsync(cancellationToken);
        Volatile.Write(ref _owed, 0);
        LogExtended(logger, extended);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Grace: extended {Instances} leases by their TTL after a period in which heartbeats could not be recorded")]
    private static partial void LogExtended(ILogger logger, int instances);
}
