using System.Data.Common;
using System.Threading.Channels;
using Npgsql;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Drain;

/// <summary>
/// Sends the drain channel's notifications. Questions are sent by the asking request (which
/// must know they went out); reports and answers are queued and sent in order by one loop,
/// a burst in one statement, so no notification handler or change waits on the database.
/// </summary>
internal sealed partial class DrainMessenger(RegistryDatabase database, RegistryMetrics metrics, ILogger<DrainMessenger> logger) : BackgroundService
{
    /// <summary>The NOTIFY channel of drain questions, beside the registry's own; each node hears the answers to its own on <see cref="DrainMessages.ReplyChannelOf"/>.</summary>
    public const string Channel = "registry_drain";

    /// <summary>Below PostgreSQL's 8,000-byte payload limit, with room to spare.</summary>
    public const int MaxPayloadBytes = 7_900;

    private const int MaxBurst = 200;

    private readonly System.Threading.Channels.Channel<(string Channel, string Payload)> _queue =
        System.Threading.Channels.Channel.CreateUnbounded<(string Channel, string Payload)>(new UnboundedChannelOptions { SingleReader = true });

    /// <summary>Queues a report or an answer to <paramref name="channel"/>; never blocks.</summary>
    public void Post(string channel, string payload) => _queue.Writer.TryWrite((channel, payload));

    /// <summary>Sends a question now; returns the database's clock when it was sent.</summary>
    /// <exception cref="DbException">The database cannot take it.</exception>
    public async Task<DateTimeOffset> AskAsync(string payload, CancellationToken cancellationToken)
    {
        await using var command = database.DataSource.CreateCommand(
            $"WITH sent AS (SELECT pg_notify('{Channel}', @payload)) SELECT clock_timestamp() FROM sent");
        command.Parameters.AddWithValue("payload", payload);
        var at = (DateTime)(await command.ExecuteScalarAsync(cancellationToken))!;
        return new DateTimeOffset(at, TimeSpan.Zero);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var reader = _queue.Reader;
        var burst = new List<(string Channel, string Payload)>(MaxBurst);
        try
        {
            while (await reader.WaitToReadAsync(stoppingToken))
            {
                burst.Clear();
                while (burst.Count < MaxBurst && reader.TryRead(out var payload))
                {
                    burst.Add(payload);
                }

                try
                {
                    // unnest keeps the arrays' order, so a node's reports arrive in the order posted.
                    await using var command = database.DataSource.CreateCommand(
                        "SELECT count(pg_notify(c, p)) FROM unnest(@channels, @payloads) AS m(c, p)");
                    command.Parameters.Add(new NpgsqlParameter<string[]>("channels", burst.Select(m => m.Channel).ToArray()));
                    command.Parameters.Add(new NpgsqlParameter<string[]>("payloads", burst.Select(m => m.Payload).ToArray()));
                    await command.ExecuteNonQueryAsync(stoppingToken);
                }
                catch (DbException e)
                {
                    // The askers time out and say so (complete false); nothing else depends on these.
                    metrics.DatabaseError("drain");
                    LogSendFailed(logger, burst.Count, e);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not send {Count} drain reports; the drains asking will time out")]
    private static partial void LogSendFailed(ILogger logger, int count, Exception exception);
}
