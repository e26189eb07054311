using System.Data.Common;
using Microsoft.Extensions.Options;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Membership;

/// <summary>A live registry node as <c>nodes</c> shows it (<see cref="NodeCapabilities"/> for what it advertises).</summary>
internal sealed record NodeInfo(string Id, string? Url, DateTimeOffset Started, DateTimeOffset LastSeen, IReadOnlyList<string>? ProbeNetworks, double? ProbesPassing, bool ProbesWithdrawn);

/// <summary>
/// The live nodes of the cluster: those whose mark in <c>nodes</c> is younger than
/// <see cref="MembershipOptions.NodeTimeout"/> and that have not left. Read again every
/// <see cref="MembershipOptions.RefreshInterval"/> (one small query), so asking costs nothing;
/// while the database cannot be read the last answer stands. A node that stops in an orderly
/// way says so (<c>left_at</c>), so the others take over its work instead of waiting for it to
/// time out; its row stays, as evidence for the grace rule. Joining and leaving are announced on
/// <see cref="ChannelName"/>, and every other node reads the live nodes again at once: a stopped
/// node's probes move within the interval their first probes are spread over, not a refresh later.
/// </summary>
internal sealed partial class LiveNodes(
    RegistryDatabase database,
    NodeIdentity node,
    RegistryMetrics metrics,
    IOptions<MembershipOptions> options,
    TimeProvider time,
    ILogger<LiveNodes> logger) : BackgroundService, IChangeFeedChannel
{
    /// <summary>Where nodes announce that they joined or left (the payload is the node's id).</summary>
    public const string ChannelName = "registry_nodes";

    private const string LiveStatement =
        """
        SELECT id, url, started_at, last_seen_at, probe_networks, probes_passing, probes_withdrawn, left_at IS NOT NULL FROM nodes
         WHERE last_seen_at > clock_timestamp() - @timeout
         ORDER BY id
        """;

    private volatile MembershipRead _last = new([], 0, []);
    private bool _failing;

    /// <summary>One read at a time, so a read that started later is never overwritten by one that started earlier.</summary>
    private readonly SemaphoreSlim _reading = new(1, 1);

    /// <summary>Cancelled when the node stops: ends the reads announcements asked for (never disposed, so a late one can still look).</summary>
    private readonly CancellationTokenSource _stopping = new();

    /// <summary>1 while a read asked for by announcements is queued and has not begun: more announcements meanwhile need no other.</summary>
    private int _readWanted;

    public string Channel => ChannelName;

    /// <summary>The feed is listening again: what was announced while it was down is read now.</summary>
    public Task ReloadAsync(CancellationToken cancellationToken)
    {
        ReadSoon();
        return Task.CompletedTask;
    }

    /// <summary>Another node joined or left: read the live nodes now, off the feed's reading path.</summary>
    public void Notified(string payload)
    {
        if (payload != node.Id)
        {
            ReadSoon();
        }
    }

    private void ReadSoon()
    {
        if (Interlocked.Exchange(ref _readWanted, 1) == 0)
        {
            ThreadPool.QueueUserWorkItem(
                static nodes =>
                {
                    // Begun: an announcement from here on asks for a read after this one.
                    Volatile.Write(ref nodes._readWanted, 0);
                    _ = nodes.ReadAnnouncedAsync();
                },
                this,
                preferLocal: false);
        }
    }

    /// <summary>The live nodes as last read, ordered by id.</summary>
    public IReadOnlyList<NodeInfo> Current => _last.Nodes;

    /// <summary>The last read, with when it was made: a new object for every read, even when nobody came or went.</summary>
    public MembershipRead Last => _last;

    /// <summary>Reads the live nodes now (for <c>GET /v1/nodes</c>), and keeps the answer.</summary>
    public async Task<IReadOnlyList<NodeInfo>> ReadAsync(CancellationToken cancellationToken)
    {
        await _reading.WaitAsync(cancellationToken);
        try
        {
            return await ReadAloneAsync(cancellationToken);
        }
        finally
        {
            _reading.Release();
        }
    }

    private async Task<IReadOnlyList<NodeInfo>> ReadAloneAsync(CancellationToken cancellationToken)
    {
        await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
        var readAt = time.GetTimestamp();
        await using var command = connection.CreateCommand();
        command.CommandText = LiveStatement;
        command.Parameters.Add(new Npgsql.NpgsqlParameter("timeout", options.Value.NodeTimeout));
        var nodes = new List<NodeInfo>();
        var left = new List<string>();
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                if (reader.GetBoolean(7))
                {
                    left.Add(reader.GetString(0));
                    continue;
                }

                nodes.Add(new NodeInfo(
                    reader.GetString(0),
                    reader.IsDBNull(1) ? null : reader.GetString(1),
                    new DateTimeOffset(reader.GetDateTime(2), TimeSpan.Zero),
                    new DateTimeOffset(reader.GetDateTime(3), TimeSpan.Zero),
                    reader.IsDBNull(4) ? null : reader.GetFieldValue<string[]>(4),
                    reader.IsDBNull(5) ? null : reader.GetFloat(5),
                    reader.GetBoolean(6)));
            }
        }

        _last = new MembershipRead([.. nodes], readAt, left);
        return _last.Nodes;
    }

    /// <summary>Knows the cluster before anything asks (the node marked itself while starting).</summary>
    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        await RefreshAsync(cancellationToken);
        try
        {
            // After the node's first mark (LeaseRenewer starts first): whoever reads on this finds it.
            await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
            await using var command = connection.CreateCommand();
            command.CommandText = "SELECT pg_notify(@channel, @node)";
            command.Parameters.Add(new Npgsql.NpgsqlParameter("channel", ChannelName));
            command.Parameters.Add(new Npgsql.NpgsqlParameter("node", node.Id));
            await command.ExecuteNonQueryAsync(cancellationToken);
        }
        catch (DbException e)
        {
            // The others find it at their next periodic read.
            LogAnnounceFailed(logger, e);
        }

        await base.StartAsync(cancellationToken);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.RefreshInterval, time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            await RefreshAsync(stoppingToken);
        }
    }

    /// <summary>Leaves the cluster, and says so: the others stop counting this node at once.</summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        await base.StopAsync(cancellationToken);
        try
        {
            await using var connection = await database.DataSource.OpenConnectionAsync(cancellationToken);
            await using var command = connection.CreateCommand();
            command.CommandText =
                """
                WITH leaving AS (UPDATE nodes SET left_at = clock_timestamp() WHERE id = @node RETURNING id)
                SELECT pg_notify(@channel, id) FROM leaving
                """;
            command.Parameters.Add(new Npgsql.NpgsqlParameter("node", node.Id));
            command.Parameters.Add(new Npgsql.NpgsqlParameter("channel", ChannelName));
            await command.ExecuteNonQueryAsync(cancellationToken);
        }
        catch (Exception e) when (e is DbException or OperationCanceledException or ObjectDisposedException)
        {
            // The others find out when this node's mark grows old (the host may already be
            // disposing its data source when it is stopped and disposed at once).
            LogLeaveFailed(logger, e);
        }
    }

    private async Task RefreshAsync(CancellationToken cancellationToken)
    {
        try
        {
            await ReadAsync(cancellationToken);
            _failing = false;
        }
        catch (DbException e)
        {
            metrics.DatabaseError("membership");
            if (!_failing)
            {
                _failing = true;
                LogFailing(logger, e);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopping.
        }
    }

    /// <summary>A read an announcement asked for: whatever it meets once the node stops (a disposed data source) is let go.</summary>
    private async Task ReadAnnouncedAsync()
    {
        try
        {
            await RefreshAsync(_stopping.Token);
        }
        catch (ObjectDisposedException) when (_stopping.IsCancellationRequested)
        {
            // Stopped.
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot read the live nodes; keeping the last known membership")]
    private static partial void LogFailing(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not announce that this node joined the cluster; the others find it at their next read")]
    private static partial void LogAnnounceFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not record that this node leaves the cluster; the others notice when its liveness mark grows old")]
    private static partial void LogLeaveFailed(ILogger logger, Exception exception);
}

/// <summary>
/// One read of the live nodes: who, when it was asked (timestamp ticks of the node's clock), and which nodes have left
/// in an orderly way since their last mark (gone for sure, not merely late).
/// </summary>
internal sealed record MembershipRead(IReadOnlyList<NodeInfo> Nodes, long ReadAt, IReadOnlyList<string> Left);
