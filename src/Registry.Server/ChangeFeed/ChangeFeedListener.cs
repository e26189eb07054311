using System.Collections.Concurrent;
using System.Data.Common;
using System.Net.Sockets;
using Microsoft.Extensions.Options;
using Npgsql;
using Polly;
using Polly.Retry;
using Registry.State;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.ChangeFeed;

/// <summary>
/// The node's LISTEN session. Each notification names an application that changed; the
/// loader reloads it. When the connection breaks the node LISTENs again and then reloads
/// everything, since notifications sent meanwhile are lost; consumers keep being served the
/// last snapshot in between.
/// </summary>
internal sealed partial class ChangeFeedListener : BackgroundService
{
    /// <summary>Payload prefix of readiness round trips; application names cannot contain '!'.</summary>
    private const string PingPrefix = "!ping:";

    private readonly RegistryDatabase _database;
    private readonly RegistryLoader _loader;
    private readonly RegistryMetrics _metrics;
    private readonly ChangeFeedOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<ChangeFeedListener> _logger;
    private readonly ResiliencePipeline _reconnect;
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _pings = new(StringComparer.Ordinal);
    private readonly IChangeFeedChannel[] _channels;
    private NpgsqlConnection? _connection;
    private readonly RegistryState _state;

    /// <summary>When the listening connection last showed it was alive (a notification, an idle check answered, its start); only the listening loop touches it.</summary>
    private DateTimeOffset _aliveAt;

    public ChangeFeedListener(
        RegistryDatabase database,
        RegistryLoader loader,
        RegistryState state,
        RegistryMetrics metrics,
        IOptions<ChangeFeedOptions> options,
        TimeProvider time,
        ILogger<ChangeFeedListener> logger,
        IEnumerable<IChangeFeedChannel> channels)
    {
        _channels = channels.ToArray();
        _database = database;
        _loader = loader;
        _state = state;
        _metrics = metrics;
        _options = options.Value;
        _time = time;
        _logger = logger;
        _reconnect = new ResiliencePipelineBuilder { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<DbException>().Handle<TimeoutException>().Handle<SocketException>().Handle<IOException>(),
                MaxRetryAttempts = int.MaxValue,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = TimeSpan.FromMilliseconds(100),
                MaxDelay = _options.MaxReconnectDelay,
                OnRetry = args =>
                {
                    LogReconnectFailed(_logger, args.AttemptNumber + 1, args.RetryDelay, args.Outcome.Exception);
                    return ValueTask.CompletedTask;
                },
            })
            .Build();
    }

    /// <summary>Whether the node is listening now (so its snapshot is current).</summary>
    public bool IsListening => _state.StaleSince is null && _connection is not null;

    /// <summary>Since when the feed has been down, if it is.</summary>
    public DateTimeOffset? LostAt => _state.StaleSince;

    /// <summary>Connects, LISTENs and loads the registry before the node serves anything.</summary>
    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        _connection = await ConnectAsync(cancellationToken);
        await base.StartAsync(cancellationToken);
    }

    /// <summary>
    /// Proves the database and the feed end to end with one statement: a NOTIFY sent through
    /// the pool (the database answers) must come back on the listening connection within the
    /// timeout (the feed listens).
    /// </summary>
    public async Task<RoundTrip> RoundTripAsync(CancellationToken cancellationToken)
    {
        var nonce = Guid.NewGuid().ToString("N");
        var echoed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _pings[nonce] = echoed;
        try
        {
            await using (var command = _database.DataSource.CreateCommand("SELECT pg_notify(@channel, @payload)"))
            {
                command.Parameters.AddWithValue("channel", Schema.ChangeChannel);
                command.Parameters.AddWithValue("payload", PingPrefix + nonce);
                await command.ExecuteNonQueryAsync(cancellationToken);
            }

            if (!IsListening)
            {
                return new RoundTrip(null, Echoed: false);
            }

            await echoed.Task.WaitAsync(_options.CheckTimeout, _time, cancellationToken);
            return new RoundTrip(null, Echoed: true);
        }
        catch (DbException e)
        {
            return new RoundTrip(e.Message, Echoed: false);
        }
        catch (TimeoutException)
        {
            return new RoundTrip(null, Echoed: false);
        }
        finally
        {
            _pings.TryRemove(nonce, out _);
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await ListenAsync(_connection!, stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e) when (e is DbException or TimeoutException or IOException or SocketException or InvalidOperationException)
            {
                // Stale since the connection last showed it was alive, not since the loss was noticed (up to an
                // idle check and its timeout later): the Age clients compare answers by must not understate it.
                _state.StaleSince = _aliveAt;
                _metrics.DatabaseError("change_feed");
                LogLost(_logger, e);
            }

            await _connection!.DisposeAsync();
            _connection = null;
            _connection = await _reconnect.ExecuteAsync(ConnectAsync, stoppingToken);
            _metrics.Reconnected();
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }

    private async ValueTask<NpgsqlConnection> ConnectAsync(CancellationToken cancellationToken)
    {
        var connection = _database.ListenerDataSource.CreateConnection();
        try
        {
            await connection.OpenAsync(cancellationToken);
            connection.Notification += OnNotification;
            await using (var listen = new NpgsqlCommand($"LISTEN {Schema.ChangeChannel}", connection))
            {
                await listen.ExecuteNonQueryAsync(cancellationToken);
            }

            foreach (var channel in _channels)
            {
                await using var listen = new NpgsqlCommand($"LISTEN {channel.Channel}", connection);
                await listen.ExecuteNonQueryAsync(cancellationToken);
                await channel.ReloadAsync(cancellationToken);
            }

            // LISTEN first, then load: a change committed in between is both loaded and
            // announced, never neither.
            await _loader.ReloadAllAsync().WaitAsync(cancellationToken);
            _aliveAt = _time.GetUtcNow();
            _state.StaleSince = null;
            LogListening(_logger, connection.ProcessID);
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    private async Task ListenAsync(NpgsqlConnection connection, CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            if (await connection.WaitAsync(_options.IdleCheckInterval, stoppingToken))
            {
                _aliveAt = _time.GetUtcNow();
                continue;
            }

            // Quiet for a while: a query that does not come back in time means a dead connection.
            await using var probe = new NpgsqlCommand("SELECT 1", connection) { CommandTimeout = (int)Math.Ceiling(_options.CheckTimeout.TotalSeconds) };
            await probe.ExecuteScalarAsync(stoppingToken);
            _aliveAt = _time.GetUtcNow();
        }
    }

    /// <summary>Runs on Npgsql's reading path, where exceptions are swallowed: it only hands the payload on.</summary>
    private void OnNotification(object sender, NpgsqlNotificationEventArgs e)
    {
        if (e.Channel != Schema.ChangeChannel)
        {
            Array.Find(_channels, c => c.Channel == e.Channel)?.Notified(e.Payload);
            return;
        }

        if (e.Payload.StartsWith(PingPrefix, StringComparison.Ordinal))
        {
            if (_pings.TryGetValue(e.Payload[PingPrefix.Length..], out var echoed))
            {
                echoed.TrySetResult();
            }

            return;
        }

        _metrics.NotificationReceived();
        _loader.Announced(e.Payload);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Change feed listening (backend {ProcessId}); registry loaded")]
    private static partial void LogListening(ILogger logger, int processId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Change feed connection lost; serving the last snapshot while reconnecting")]
    private static partial void LogLost(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Change feed reconnect attempt {Attempt} failed; next in {Delay}")]
    private static partial void LogReconnectFailed(ILogger logger, int attempt, TimeSpan delay, Exception? exception);
}

/// <summary>The outcome of a readiness round trip: the database's error if it could not take the NOTIFY, and whether the feed echoed it.</summary>
internal readonly record struct RoundTrip(string? DatabaseError, bool Echoed);
