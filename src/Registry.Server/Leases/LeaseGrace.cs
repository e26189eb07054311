using Microsoft.Extensions.Options;
using Npgsql;
using Registry.Membership;
using Registry.Telemetry;

namespace Registry.Leases;

/// <summary>
/// The grace rule, decided for the cluster from the database. Every node marks its row of
/// <c>nodes</c> while it can reach the database, so the newest mark says when the cluster
/// last could record renewals. When it is older than <see cref="LeaseOptions.GraceGap"/>
/// (the database was down, or unreachable from every node, or every node was stopped), the
/// leases that were live when that began are extended by their TTL before anything is swept:
/// a registry-side fault never evicts a healthy fleet. One node starting or failing alone
/// owes nothing (the others recorded meanwhile), and a lease that had run out before the gap
/// began is never revived, so restarts cannot keep dead providers listed.
/// </summary>
internal sealed partial class LeaseGrace(
    NodeIdentity node,
    AdvertisedUrl url,
    NodeCapabilities capabilities,
    RegistryMetrics metrics,
    IOptions<LeaseOptions> options,
    ILogger<LeaseGrace> logger)
{
    /// <summary>
    /// Reads when the cluster last recorded and, in the same statement, marks this node when
    /// asked and no gap is owed; the mark waits for the extension, so the evidence of the gap
    /// survives until a node has acted on it.
    /// </summary>
    private const string MarkStatement =
        """
        WITH last AS (SELECT max(last_seen_at) AS at FROM nodes),
        gate AS (SELECT at, coalesce(clock_timestamp() - at > @gap, false) AS owed FROM last),
        marked AS (
            INSERT INTO nodes (id, url, probe_networks, probes_passing, probes_withdrawn, started_at, last_seen_at, vouched_at)
            SELECT @node, @url, @probes, @passing, @withdrawn, clock_timestamp(), clock_timestamp(), clock_timestamp() - @behind
              FROM gate WHERE NOT owed AND @mark
            ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at, vouched_at = greatest(nodes.vouched_at, excluded.vouched_at),
                                           url = coalesce(excluded.url, nodes.url),
                                           probe_networks = excluded.probe_networks, probes_passing = excluded.probes_passing,
                                           probes_withdrawn = excluded.probes_withdrawn
            RETURNING 1)
        SELECT g.owed, g.at, clock_timestamp(), (SELECT count(*) FROM marked) FROM gate g
        """;

    /// <summary>Extends the leases live when the gap began (<c>@since</c>) and marks this node, atomically.</summary>
    private const string ExtendStatement =
        """
        WITH live AS (
            -- Locked in the order registrations and renewals lock rows (the database's default
            -- collation, as over their unnest): a recovery's first renewals cannot deadlock with it.
            SELECT application, protocol, addr FROM instances
             WHERE expires_at > @since
               AND expires_at < clock_timestamp() + ttl_seconds * interval '1 second'
             ORDER BY application COLLATE "default", protocol COLLATE "default", addr COLLATE "default"
               FOR NO KEY UPDATE),
        extended AS (
            UPDATE instances i
               SET expires_at = clock_timestamp() + i.ttl_seconds * interval '1 second'
              FROM live l
             WHERE i.application = l.application AND i.protocol = l.protocol AND i.addr = l.addr
            RETURNING 1),
        marked AS (
            INSERT INTO nodes (id, url, probe_networks, probes_passing, probes_withdrawn, started_at, last_seen_at, vouched_at)
            VALUES (@node, @url, @probes, @passing, @withdrawn, clock_timestamp(), clock_timestamp(), @vouched)
            ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at, vouched_at = greatest(nodes.vouched_at, excluded.vouched_at),
                                           url = coalesce(excluded.url, nodes.url),
                                           probe_networks = excluded.probe_networks, probes_passing = excluded.probes_passing,
                                           probes_withdrawn = excluded.probes_withdrawn
            RETURNING 1)
        SELECT (SELECT count(*) FROM extended)::int, (SELECT count(*) FROM marked)
        """;

    /// <summary>
    /// Marks this node as able to record, first extending the leases when the cluster owes a grace period (which
    /// marks it in any case). Runs every <see cref="LeaseOptions.LivenessInterval"/>, after the node's renewals are
    /// written: only a node that has written what it promised may mark, since its mark releases the sweepers' hold on
    /// the leases it may have renewed (a sweep does not mark, and waits while a grace is owed: see <see cref="OwedAsync"/>).
    /// Returns the database's clock. What the mark vouches for (<c>vouched_at</c>: every renewal gathered before it is
    /// written) is <paramref name="behind"/> earlier: the start of the flush that wrote them, not its end, since a
    /// renewal gathered while it ran (however long it stalled) waits for the next one.
    /// </summary>
    public async Task<DateTimeOffset> SettleAsync(NpgsqlConnection connection, TimeSpan behind, CancellationToken cancellationToken)
    {
        var (owed, since, now) = await GateAsync(connection, null, mark: true, behind, cancellationToken);
        if (!owed || since is not { } began)
        {
            metrics.LivenessMarked();
            return now;
        }

        await using var extend = new NpgsqlCommand(ExtendStatement, connection);
        extend.Parameters.AddWithValue("since", began);
        // As of the gate's clock, not the extension's, which comes after its row locks: renewals gathered meanwhile are not written.
        extend.Parameters.AddWithValue("vouched", now - behind);
        AddNode(extend);
        var extended = (int)(await extend.ExecuteScalarAsync(cancellationToken))!;
        metrics.Swept("grace");
        metrics.LivenessMarked();
        LogExtended(logger, extended, now - began);
        return now;
    }

    /// <summary>
    /// Whether the cluster owes a grace period now (no node marked for <see cref="LeaseOptions.GraceGap"/>), and the
    /// database's clock; marks nothing. A sweep that finds one owed waits: the grace is extended by the first node to
    /// write its renewals and mark, and a sweep before it could evict a lease a node promised and has not written.
    /// </summary>
    public async Task<(bool Owed, DateTimeOffset Now)> OwedAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken)
    {
        var (owed, _, now) = await GateAsync(connection, transaction, mark: false, TimeSpan.Zero, cancellationToken);
        return (owed, now);
    }

    private async Task<(bool Owed, DateTimeOffset? Since, DateTimeOffset Now)> GateAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, bool mark, TimeSpan behind, CancellationToken cancellationToken)
    {
        await using var gate = new NpgsqlCommand(MarkStatement, connection, transaction);
        gate.Parameters.AddWithValue("gap", options.Value.GraceGap);
        gate.Parameters.AddWithValue("mark", mark);
        gate.Parameters.AddWithValue("behind", behind);
        AddNode(gate);
        await using var reader = await gate.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return (reader.GetBoolean(0),
            reader.IsDBNull(1) ? null : new DateTimeOffset(reader.GetDateTime(1), TimeSpan.Zero),
            new DateTimeOffset(reader.GetDateTime(2), TimeSpan.Zero));
    }

    /// <summary>What this node's row says of it.</summary>
    private void AddNode(NpgsqlCommand command)
    {
        command.Parameters.AddWithValue("node", node.Id);
        // The URL is known once the server listens; until then the row carries none.
        command.Parameters.Add(new NpgsqlParameter<string?>("url", url.Value));
        var probes = capabilities.Probes;
        command.Parameters.Add(new NpgsqlParameter<string[]?>("probes", NpgsqlTypes.NpgsqlDbType.Array | NpgsqlTypes.NpgsqlDbType.Text)
        {
            TypedValue = capabilities.ProbeNetworks,
        });
        command.Parameters.Add(new NpgsqlParameter<float?>("passing", NpgsqlTypes.NpgsqlDbType.Real) { TypedValue = (float?)probes.Passing });
        command.Parameters.Add(new NpgsqlParameter<bool>("withdrawn", probes.Withdrawn));
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Grace: no node could record lease renewals for {Gap}; extended the {Instances} leases that were live when that began by their TTL")]
    private static partial void LogExtended(ILogger logger, int instances, TimeSpan gap);
}
