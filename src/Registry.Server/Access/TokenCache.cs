using System.Collections.Concurrent;
using System.Collections.Frozen;
using System.Data.Common;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Options;
using Registry.State;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Access;

/// <summary>How a presented registry token fared.</summary>
internal enum TokenCheck
{
    Valid,
    Unknown,
    Expired,
}

/// <summary>
/// Every registry token of the database in memory, keyed by the SHA-256 of its secret, so a
/// request costs a hash and a dictionary look-up, never a query. The change feed reloads it
/// when a token is created or revoked on any node (and whenever the feed reconnects). When a
/// token was last used is kept here and written for all tokens at once every
/// <see cref="AccessOptions.LastUsedFlushInterval"/>; with that write, tokens expired for
/// <see cref="AccessOptions.ForgetExpiredAfter"/> are deleted (by whichever node sees it due
/// first), so tokens made with an expiry, one per deploy or job, do not pile up. While the change
/// feed is down no revocation is heard, so a token is then confirmed in the database (<see cref="StandsAsync"/>).
/// </summary>
internal sealed partial class TokenCache : BackgroundService, IChangeFeedChannel
{
    /// <summary>How long a token confirmed in the database while the change feed is down stands before it is asked again (and how long an answer is waited for).</summary>
    private static readonly TimeSpan ConfirmedFor = TimeSpan.FromSeconds(1);

    private readonly RegistryDatabase _database;
    private readonly RegistryState _state;
    private readonly TimeProvider _time;
    private readonly AuditLog _audit;
    private readonly AccessOptions _options;
    private readonly ILogger<TokenCache> _logger;
    private readonly byte[]? _bootstrapHash;
    private readonly Grant _bootstrap = new("bootstrap", ["*"], ["*"], admin: true);
    private readonly SemaphoreSlim _reloadWanted = new(0, 1);
    private readonly SemaphoreSlim _reloading = new(1, 1);
    private volatile FrozenDictionary<string, Entry> _tokens = FrozenDictionary<string, Entry>.Empty;
    /// <summary>The tokens by id: their revocations and expiries.</summary>
    private volatile FrozenDictionary<string, Entry> _byId = FrozenDictionary<string, Entry>.Empty;

    /// <summary>The database's last word on each token asked while the change feed was down, by id; a reload keeps only the tokens it loaded.</summary>
    private readonly ConcurrentDictionary<string, Task<(bool Stands, long At)>> _confirmations = new(StringComparer.Ordinal);

    /// <summary>When the first loaded token is due to be forgotten (ticks, UTC); <see cref="long.MaxValue"/> for none.</summary>
    private long _forgetDueTicks = long.MaxValue;

    public TokenCache(RegistryDatabase database, RegistryState state, TimeProvider time, AuditLog audit, IOptions<AccessOptions> options, ILogger<TokenCache> logger)
    {
        _database = database;
        _state = state;
        _time = time;
        _audit = audit;
        _options = options.Value;
        _logger = logger;
        _bootstrapHash = string.IsNullOrEmpty(_options.BootstrapToken) ? null : RegistryTokens.Hash(_options.BootstrapToken);
    }

    public string Channel => Schema.TokenChannel;

    /// <summary>How many tokens the database holds (as of the last load).</summary>
    public int Count => _tokens.Count;

    /// <summary>Whether a bootstrap token is configured.</summary>
    public bool HasBootstrap => _bootstrapHash is not null;

    /// <summary>Looks the secret up; a valid token's use is noted for the next last-used write.</summary>
    public TokenCheck Check(string secret, out Grant? grant)
    {
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        var bytes = Encoding.UTF8.GetBytes(secret);
        SHA256.HashData(bytes, hash);
        grant = null;
        if (_bootstrapHash is not null && CryptographicOperations.FixedTimeEquals(hash, _bootstrapHash))
        {
            grant = _bootstrap;
            return TokenCheck.Valid;
        }

        // Keyed by the hash, so the look-up's timing says nothing about any secret; the
        // compare that decides is still constant-time.
        if (!_tokens.TryGetValue(Convert.ToHexString(hash), out var entry) || !CryptographicOperations.FixedTimeEquals(hash, entry.Hash))
        {
            return TokenCheck.Unknown;
        }

        var now = _time.GetUtcNow();
        if (entry.Grant.Expires <= now)
        {
            return TokenCheck.Expired;
        }

        Interlocked.Exchange(ref entry.LastUsedTicks, now.UtcTicks);
        grant = entry.Grant;
        return TokenCheck.Valid;
    }

    /// <summary>
    /// Whether a token <see cref="Check"/> accepted still stands. While the change feed is up, it does: a revocation
    /// on any node reaches this cache within a second. While it is down (for as long as the node knows it: a connection
    /// that died silently is noticed within the feed's idle check), the cache hears of none, so a registry token is
    /// confirmed in the database, at most once a second per token, every request meanwhile sharing the answer. When the
    /// database cannot answer either, the token stands as last loaded, as Consul's ACL <c>extend-cache</c> does: what it
    /// then authorizes is an answer from memory, or a write that needs the database anyway. A token found revoked
    /// reloads the cache, which ends what it holds open.
    /// </summary>
    public async ValueTask<bool> StandsAsync(Grant grant, CancellationToken cancellationToken)
    {
        if (!grant.Stored || _state.StaleSince is null)
        {
            return true;
        }

        var asked = _confirmations.GetValueOrDefault(grant.Id);
        if (asked is null || (asked.IsCompleted && (!asked.IsCompletedSuccessfully || _time.GetElapsedTime(asked.Result.At) > ConfirmedFor)))
        {
            // Two requests may both ask at once; either answer is as good.
            asked = ConfirmAsync(grant.Id);
            _confirmations[grant.Id] = asked;
        }

        try
        {
            // The statement's own cancellation may take longer than its timeout (a cancel request to a database that is not there).
            return (await asked.WaitAsync(ConfirmedFor, _time, cancellationToken)).Stands;
        }
        catch (TimeoutException)
        {
            return true;
        }
    }

    private async Task<(bool Stands, long At)> ConfirmAsync(string id)
    {
        bool stands;
        try
        {
            using var timeout = new CancellationTokenSource(ConfirmedFor, _time);
            stands = await TokenStore.ExistsAsync(_database.DataSource, id, timeout.Token);
            if (!stands)
            {
                Notified(id);
            }
        }
        catch (Exception e) when (e is DbException or OperationCanceledException)
        {
            stands = true;
        }

        return (stands, _time.GetTimestamp());
    }

    /// <summary>
    /// Cancelled when the credential of <paramref name="grant"/> is revoked: what ends a request
    /// it holds open (a session). Already cancelled when it was revoked since it was accepted;
    /// never for credentials that are not stored (the bootstrap token, a JWT, an Open node's anonymous callers).
    /// </summary>
    public CancellationToken Revocation(Grant grant) =>
        !grant.Stored ? CancellationToken.None
        : _byId.TryGetValue(grant.Id, out var entry) ? entry.Revoked.Token
        : new CancellationToken(canceled: true);

    /// <summary>Whether the registry token <paramref name="id"/> is still valid: not revoked, not expired.</summary>
    public bool Holds(string id) => _byId.TryGetValue(id, out var entry) && entry.Grant.Expires > _time.GetUtcNow();

    /// <summary>When this node last accepted each token it has accepted since it loaded it, by id.</summary>
    public Dictionary<string, DateTimeOffset> LastUsedHere() =>
        _tokens.Values
            .Select(e => (e.Grant.Id, Ticks: Interlocked.Read(ref e.LastUsedTicks)))
            .Where(e => e.Ticks > 0)
            .ToDictionary(e => e.Id, e => new DateTimeOffset(e.Ticks, TimeSpan.Zero), StringComparer.Ordinal);

    public async Task ReloadAsync(CancellationToken cancellationToken)
    {
        await _reloading.WaitAsync(cancellationToken);
        try
        {
            var rows = await TokenStore.LoadAsync(_database.DataSource, cancellationToken);
            var previous = _tokens;
            var loaded = new Dictionary<string, Entry>(rows.Count, StringComparer.Ordinal);
            foreach (var (hash, grant) in rows)
            {
                var key = Convert.ToHexString(hash);
                if (previous.TryGetValue(key, out var old))
                {
                    // Uses not yet written survive the reload, and so do the sessions watching for its revocation.
                    loaded[key] = new Entry(hash, grant, old.Revoked)
                    {
                        LastUsedTicks = Interlocked.Read(ref old.LastUsedTicks),
                        WrittenTicks = old.WrittenTicks,
                    };
                }
                else
                {
                    loaded[key] = new Entry(hash, grant, new CancellationTokenSource());
                }
            }

            // Revocations first: a token accepted from the new set already has its own.
            _byId = loaded.Values.ToFrozenDictionary(e => e.Grant.Id, StringComparer.Ordinal);
            foreach (var id in _confirmations.Keys.Where(id => !_byId.ContainsKey(id)))
            {
                _confirmations.TryRemove(id, out _);
            }

            _tokens = loaded.ToFrozenDictionary(StringComparer.Ordinal);
            Interlocked.Exchange(ref _forgetDueTicks, loaded.Values.Select(e => ForgetDueTicks(e.Grant.Expires)).DefaultIfEmpty(long.MaxValue).Min());
            foreach (var (key, gone) in previous)
            {
                if (!loaded.ContainsKey(key))
                {
                    // Revoked (its row deleted): the sessions it opened end.
                    await gone.Revoked.CancelAsync();
                }
            }

            LogLoaded(_logger, loaded.Count);
        }
        finally
        {
            _reloading.Release();
        }
    }

    public void Notified(string payload)
    {
        // Several notifications before the reload runs need one reload.
        if (_reloadWanted.CurrentCount == 0)
        {
            try
            {
                _reloadWanted.Release();
            }
            catch (SemaphoreFullException)
            {
                // Another notification got there first.
            }
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var flushing = FlushLoopAsync(stoppingToken);
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                await _reloadWanted.WaitAsync(stoppingToken);
                try
                {
                    await ReloadAsync(stoppingToken);
                }
                catch (DbException e)
                {
                    // The feed's reconnect reloads too; meanwhile try again shortly.
                    LogReloadFailed(_logger, e);
                    await Task.Delay(TimeSpan.FromSeconds(1), _time, stoppingToken);
                    Notified("");
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping.
        }

        await flushing;
    }

    private async Task FlushLoopAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(_options.LastUsedFlushInterval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await FlushAsync(stoppingToken);
                await ForgetExpiredAsync(stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // The last uses are written on stop.
        }
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        await FlushAsync(cancellationToken);
    }

    /// <summary>Writes when each token used since the last write was last used: one statement for all.</summary>
    public async Task FlushAsync(CancellationToken cancellationToken)
    {
        var used = _tokens.Values.Where(e => Interlocked.Read(ref e.LastUsedTicks) > e.WrittenTicks).ToList();
        if (used.Count == 0)
        {
            return;
        }

        var ticks = used.Select(e => Interlocked.Read(ref e.LastUsedTicks)).ToArray();
        try
        {
            await TokenStore.RecordUseAsync(_database.DataSource, used.Select(e => e.Grant.Id).ToArray(),
                ticks.Select(t => new DateTime(t, DateTimeKind.Utc)).ToArray(), cancellationToken);
            for (var i = 0; i < used.Count; i++)
            {
                used[i].WrittenTicks = ticks[i];
            }
        }
        catch (DbException e)
        {
            // Kept in memory: the next write carries them.
            LogFlushFailed(_logger, e);
        }
    }

    /// <summary>When a token expiring at <paramref name="expires"/> is due to be forgotten, in UTC ticks; <see cref="long.MaxValue"/> for never.</summary>
    private long ForgetDueTicks(DateTimeOffset? expires) =>
        expires is { } at && at.UtcTicks <= DateTimeOffset.MaxValue.UtcTicks - _options.ForgetExpiredAfter.Ticks
            ? at.UtcTicks + _options.ForgetExpiredAfter.Ticks
            : long.MaxValue;

    /// <summary>
    /// Deletes the tokens expired for <see cref="AccessOptions.ForgetExpiredAfter"/> once this
    /// node sees one due: no statement otherwise. The deletion reloads every node's tokens.
    /// </summary>
    private async Task ForgetExpiredAsync(CancellationToken cancellationToken)
    {
        var due = Interlocked.Read(ref _forgetDueTicks);
        var now = _time.GetUtcNow().UtcTicks;
        if (due > now)
        {
            return;
        }

        try
        {
            var (forgotten, next) = await TokenStore.ForgetExpiredAsync(_database.DataSource, _options.ForgetExpiredAfter, cancellationToken);
            foreach (var (id, expired) in forgotten)
            {
                _audit.TokenForgotten(id, expired);
            }

            // Due by the database's clock, so a node whose clock runs ahead does not ask again every
            // interval; unless a reload (a token made meanwhile) has set it since.
            var nextDue = next is { } wait && wait.Ticks < DateTimeOffset.MaxValue.UtcTicks - now ? now + wait.Ticks : long.MaxValue;
            Interlocked.CompareExchange(ref _forgetDueTicks, nextDue, due);
        }
        catch (DbException e)
        {
            // Still due: the next write tries again.
            LogForgetFailed(_logger, e);
        }
    }

    public override void Dispose()
    {
        base.Dispose();
        _reloadWanted.Dispose();
        _reloading.Dispose();
    }

    private sealed class Entry(byte[] hash, Grant grant, CancellationTokenSource revoked)
    {
        public byte[] Hash { get; } = hash;

        public Grant Grant { get; } = grant;

        /// <summary>Cancelled when a reload no longer finds the token; one for its whole life in the cache.</summary>
        public CancellationTokenSource Revoked { get; } = revoked;

        /// <summary>UTC ticks of the last accepted use on this node; 0 for none.</summary>
        public long LastUsedTicks;

        /// <summary>The <see cref="LastUsedTicks"/> last written to the database (only the flush touches it).</summary>
        public long WrittenTicks;
    }

    [LoggerMessage(Level = LogLevel.Debug, Message = "Loaded {Count} registry tokens")]
    private static partial void LogLoaded(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot reload the registry tokens; retrying")]
    private static partial void LogReloadFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot delete the tokens expired long ago; trying again with the next write")]
    private static partial void LogForgetFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Cannot record when tokens were last used; keeping it for the next write")]
    private static partial void LogFlushFailed(ILogger logger, Exception exception);
}
