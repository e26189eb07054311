using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using Registry.Access;
using Registry.Leases;
using Registry.Model;
using Registry.Registration;
using Registry.State;
using Registry.Storage;
using Registry.Telemetry;

namespace Registry.Sessions;

/// <summary>
/// Holds sessions open. A session is a held request like a parked poll: no database connection,
/// no statement of its own. While it is open its lease joins the coalesced renewal batch
/// (<see cref="LeaseRenewer"/>), checked at a quarter of the TTL; its stream carries a comment
/// every <see cref="SessionOptions.KeepAliveSeconds"/>. It ends when the connection closes (the
/// instance is removed through the write batch, so consumers are woken as for an unregister),
/// when memory shows the instance removed or re-registered elsewhere (an <c>ended</c> event, the
/// instance left alone), or when the node stops or cannot record renewals (the stream closes and
/// the lease runs on, so the provider opens its session on another node before it expires), or
/// when the credential that opened it is revoked or expires (the stream closes and the lease is
/// left to run out, as a heartbeat's would: only a valid credential keeps an instance registered).
/// </summary>
internal sealed partial class SessionKeeper(
    RegistryState state,
    LeaseRenewer renewer,
    WriteBatcher writes,
    TokenCache tokens,
    DatabaseClock clock,
    SessionMetrics metrics,
    AuditLog audit,
    IOptions<SessionOptions> options,
    IOptions<JsonOptions> json,
    IHostApplicationLifetime lifetime,
    TimeProvider time,
    ILogger<SessionKeeper> logger)
{
    /// <summary>The response header that says every how many seconds a keep-alive comment comes.</summary>
    public const string KeepAliveHeader = "X-Registry-Keep-Alive";

    /// <summary>The first and the longest wait between attempts to remove a closed session's instance.</summary>
    private static readonly TimeSpan RemoveRetryFirst = TimeSpan.FromMilliseconds(100), RemoveRetryMost = TimeSpan.FromSeconds(2);

    private static readonly byte[] KeepAlive = ": keep-alive\n\n"u8.ToArray();
    private static readonly byte[] CredentialEnded = ": closed: the credential that opened this session was revoked or has expired\n\n"u8.ToArray();

    /// <summary>
    /// Streams the session registered as <paramref name="registered"/> until it ends; removes the
    /// instance when the connection closed. <paramref name="streamEnded"/> runs once the stream is
    /// over, before the removal and before the session is counted as ended (its place in the
    /// node's limits is free from then on).
    /// </summary>
    public async Task HoldAsync(HttpContext http, Provider provider, int ttlSeconds, WriteResult registered, Grant credential, Action streamEnded)
    {
        var key = provider.Key;
        using var watch = state.Watches.Watch(key, registered.Revision, registered.Reflected, state);
        var revoked = tokens.Revocation(credential);
        using var stop = revoked.CanBeCanceled
            ? CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, lifetime.ApplicationStopping, revoked)
            : CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted, lifetime.ApplicationStopping);
        metrics.Opened();
        audit.SessionStarted(credential.Id, key, ttlSeconds);
        GiveUpOnASilentPeer(http, ttlSeconds);
        SessionEnd end;
        try
        {
            var response = http.Response;
            http.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = "text/event-stream; charset=utf-8";
            response.Headers.CacheControl = "no-cache";
            // nginx: pass the stream through as it is written.
            response.Headers["X-Accel-Buffering"] = "no";
            // How often something comes: a client tells a silent path (a half-open connection) from a quiet stream by it.
            response.Headers[KeepAliveHeader] = KeepAliveSeconds(ttlSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture);
            var lease = RegistrationApi.Lease(key, provider.Meta, ttlSeconds, registered.ExpiresAt);
            var first = Encoding.UTF8.GetBytes($"event: lease\ndata: {JsonSerializer.Serialize(lease, json.Value.SerializerOptions)}\n\n");
            end = await WriteAsync(response, first, stop.Token)
                ? await KeepAsync(response, watch, ttlSeconds, registered.ExpiresAt, credential.Expires, stop.Token)
                : SessionEnd.Closed;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException)
        {
            end = SessionEnd.Closed;
        }

        if (end == SessionEnd.Closed && revoked.IsCancellationRequested)
        {
            end = SessionEnd.Unauthorized;
        }

        if (end == SessionEnd.Unauthorized)
        {
            // Said for whoever reads the stream (curl in a runbook); a client opens it again, and a refusal tells it why.
            try
            {
                await WriteAsync(http.Response, CredentialEnded, http.RequestAborted);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException)
            {
                // Gone already.
            }
        }

        streamEnded();

        // A session released by a stopping node leaves its lease to run: the provider opens it elsewhere.
        if (end == SessionEnd.Closed && lifetime.ApplicationStopping.IsCancellationRequested)
        {
            end = SessionEnd.Released;
        }

        // Only this session's own registration goes: any later one (another session's, a register,
        // even with the same meta) has another revision, which the database checks in the same statement.
        if (end == SessionEnd.Closed)
        {
            await RemoveAsync(key, registered.Revision, ttlSeconds);
        }

        metrics.Ended(end);
        audit.SessionEnded(credential.Id, key, SessionMetrics.Reason(end));
    }

    /// <summary>Keeps the session until something ends it; writes the <c>ended</c> event when that is the instance's fate.</summary>
    private async Task<SessionEnd> KeepAsync(
        HttpResponse response, InstanceWatch watch, int ttlSeconds, DateTimeOffset expiresAt, DateTimeOffset credentialExpires, CancellationToken stop)
    {
        var keepAlive = TimeSpan.FromSeconds(KeepAliveSeconds(ttlSeconds));
        // Renew (Renew decides whether the batch needs it) well within the lease, however short.
        var renewEvery = TimeSpan.FromTicks(Math.Min(keepAlive.Ticks, TimeSpan.FromSeconds(ttlSeconds).Ticks / 4));
        var nextKeepAlive = time.GetTimestamp() + Ticks(keepAlive);
        var nextRenewal = time.GetTimestamp() + Ticks(renewEvery);
        while (true)
        {
            var expiresIn = credentialExpires - time.GetUtcNow();
            if (expiresIn <= TimeSpan.Zero)
            {
                return SessionEnd.Unauthorized;
            }

            var wait = time.GetElapsedTime(time.GetTimestamp(), Math.Min(nextKeepAlive, nextRenewal));
            wait = wait < expiresIn ? wait : expiresIn;

            if (wait > TimeSpan.Zero)
            {
                // The delay ends early (cancelled) when the connection closes or the node stops.
                await Task.WhenAny(watch.Fate, Task.Delay(wait, time, stop));
            }

            if (watch.Fate.IsCompleted)
            {
                return await EndedAsync(response, watch.Fate.Result == InstanceFate.Replaced ? SessionEnd.Replaced
                    // Gone before the lease this node renewed ran out: someone unregistered it.
                    : clock.UtcNow >= expiresAt ? SessionEnd.Evicted
                    : SessionEnd.Unregistered, stop);
            }

            if (stop.IsCancellationRequested)
            {
                return SessionEnd.Closed;
            }

            var now = time.GetTimestamp();
            if (now >= nextRenewal)
            {
                nextRenewal = now + Ticks(renewEvery);
                if (state.Find(watch.Key) is { } instance)
                {
                    if (renewer.Renew(instance) is not { } renewed)
                    {
                        // This node cannot record the lease: close, so the provider moves to a node that can.
                        LogUnrecorded(logger, watch.Key.Application, watch.Key.Protocol, watch.Key.Addr);
                        return SessionEnd.Released;
                    }

                    expiresAt = renewed;
                }
                else if (clock.UtcNow >= expiresAt - TimeSpan.FromSeconds(ttlSeconds) / 2)
                {
                    // Memory has not shown this registration (it was answered before memory caught up, and the
                    // database could not be read back then: the watch takes no absence for a removal until it has
                    // seen the instance), so nothing renews its lease, and half of it has passed. This node cannot
                    // keep it: release the stream, the lease running on, so that the provider opens its session
                    // again (on another node first) before the lease runs out, whether its row is still there or
                    // was evicted meanwhile, when memory would never show it and the session would stay open for good.
                    LogNotInMemory(logger, watch.Key.Application, watch.Key.Protocol, watch.Key.Addr);
                    return SessionEnd.Released;
                }
            }

            if (now >= nextKeepAlive)
            {
                nextKeepAlive = now + Ticks(keepAlive);
                if (!await WriteAsync(response, KeepAlive, stop))
                {
                    return SessionEnd.Closed;
                }
            }
        }
    }

    /// <summary>
    /// Seconds between a session's keep-alives: <see cref="SessionOptions.KeepAliveSeconds"/>, or a third of its TTL if
    /// shorter (at least 1), so that a client that hears nothing for three of them gives up before its lease runs out.
    /// </summary>
    private int KeepAliveSeconds(int ttlSeconds) => Math.Min(options.Value.KeepAliveSeconds, Math.Max(1, ttlSeconds / 3));

    /// <summary>Writes the <c>ended</c> event of <paramref name="end"/>; returns it.</summary>
    private static async Task<SessionEnd> EndedAsync(HttpResponse response, SessionEnd end, CancellationToken stop)
    {
        var ended = Encoding.UTF8.GetBytes($"event: ended\ndata: {{\"reason\":\"{SessionMetrics.Reason(end)}\"}}\n\n");
        await WriteAsync(response, ended, stop);
        return end;
    }

    /// <summary>
    /// A provider whose host dies without closing its connection (power lost, a kernel panic, a
    /// network partition) never resets it: its kernel is gone, so nothing acknowledges the
    /// keep-alives, and Linux would retransmit them for about 15 minutes (tcp_retries2) while
    /// the session kept renewing the lease. With TCP_USER_TIMEOUT the kernel gives up once sent
    /// data has gone unacknowledged for the session's TTL (at least two keep-alive intervals):
    /// the connection fails, the session ends as closed and its instance is removed, as a lease
    /// left to run out would have been. Behind a proxy this is the proxy's connection, not the provider's.
    /// </summary>
    private void GiveUpOnASilentPeer(HttpContext http, int ttlSeconds)
    {
        if (!OperatingSystem.IsLinux() || http.Features.Get<IConnectionSocketFeature>()?.Socket is not { ProtocolType: ProtocolType.Tcp } socket)
        {
            return;
        }

        const int IpProtocolTcp = 6, TcpUserTimeout = 18;
        var timeout = TimeSpan.FromSeconds(Math.Max(ttlSeconds, 2 * KeepAliveSeconds(ttlSeconds)));
        try
        {
            socket.SetRawSocketOption(IpProtocolTcp, TcpUserTimeout, BitConverter.GetBytes((uint)timeout.TotalMilliseconds));
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            // Refused, or the connection is already gone: the session's own rules still apply.
        }
    }

    /// <summary>Writes and flushes; false when the connection can take no more.</summary>
    private static async Task<bool> WriteAsync(HttpResponse response, byte[] bytes, CancellationToken cancellationToken)
    {
        var result = await response.BodyWriter.WriteAsync(bytes, cancellationToken);
        return !(result.IsCanceled || result.IsCompleted);
    }

    /// <summary>
    /// Removes the instance of a closed session while it still holds the revision the session
    /// registered, through the write batch (one NOTIFY per batch, consumers woken). A full write
    /// queue is waited out, and a failed write (a statement timeout, a connection reset, a failover)
    /// tried again, for as long as the lease would have run anyway: nobody else will remove it, and
    /// the revision keeps a later registration safe from every attempt. Not once the node stops.
    /// </summary>
    private async Task RemoveAsync(InstanceKey key, long revision, int ttlSeconds)
    {
        var giveUpAt = time.GetTimestamp() + Ticks(TimeSpan.FromSeconds(ttlSeconds));
        var delay = RemoveRetryFirst;
        while (true)
        {
            var left = TimeSpan.FromSeconds((double)(giveUpAt - time.GetTimestamp()) / time.TimestampFrequency);
            try
            {
                await writes.SubmitWhenRoomAsync(new UnregisterCommand(key, revision), left > TimeSpan.Zero ? left : TimeSpan.Zero);
                return;
            }
            catch (WriteUnavailableException e) when (left > delay && !lifetime.ApplicationStopping.IsCancellationRequested)
            {
                LogRemoveRetried(logger, key.Application, key.Protocol, key.Addr, e.Message, delay);
            }
            catch (WriteUnavailableException e)
            {
                // Its lease runs out on its own (no renewal joins the batch any more).
                LogRemoveFailed(logger, key.Application, key.Protocol, key.Addr, e.Message);
                return;
            }

            try
            {
                await Task.Delay(delay, time, lifetime.ApplicationStopping);
            }
            catch (OperationCanceledException)
            {
                LogRemoveFailed(logger, key.Application, key.Protocol, key.Addr, "the node is stopping");
                return;
            }

            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, RemoveRetryMost.Ticks));
        }
    }

    private long Ticks(TimeSpan span) => (long)(span.TotalSeconds * time.TimestampFrequency);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Closing the session of {Application} {Protocol} {Addr}: this node cannot record lease renewals now; the provider should reopen it on another node")]
    private static partial void LogUnrecorded(ILogger logger, string application, string protocol, string addr);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Closing the session of {Application} {Protocol} {Addr}: this node's memory has not shown its registration for half its lease (the database could not be read back); the provider should reopen it on another node")]
    private static partial void LogNotInMemory(ILogger logger, string application, string protocol, string addr);

    [LoggerMessage(Level = LogLevel.Information, Message = "The closed session of {Application} {Protocol} {Addr} could not be removed yet ({Reason}); trying again in {Delay}")]
    private static partial void LogRemoveRetried(ILogger logger, string application, string protocol, string addr, string reason, TimeSpan delay);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The closed session of {Application} {Protocol} {Addr} could not be removed ({Reason}); it goes when its lease runs out")]
    private static partial void LogRemoveFailed(ILogger logger, string application, string protocol, string addr, string reason);
}
