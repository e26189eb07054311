using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Registry.Client;

/// <summary>
/// The session mode of a lease: one step of the loop either opens a session (and reads its <c>lease</c> event) or
/// reads the open one until it ends. A stream that fails or ends without an <c>ended</c> event (its node stopped)
/// is a transient failure: the loop backs off and opens it again, starting from the next server.
/// </summary>
public sealed partial class RegistrationLease
{
    /// <summary>
    /// How long after an open that got no answer a <c>replaced</c> may be that open's own doing: a node that took it
    /// may commit it late (its write queued behind others, each statement given 30 s by default and retried) and then,
    /// its request gone, close the session, which would leave the instance with no session at all.
    /// </summary>
    private static readonly TimeSpan LateOpenWindow = TimeSpan.FromMinutes(2);

    private readonly TimeSpan _sessionIdleTimeout;
    private SessionConnection? _session;
    /// <summary>When the open session was opened (a <see cref="TimeProvider.GetTimestamp"/>).</summary>
    private long _sessionOpenedAt;
    // Opens that nodes took without answering, not yet accounted for by a 'replaced', and when the last one was sent.
    private int _opensInDoubt;
    /// <summary>When the last open in doubt was counted (a <see cref="TimeProvider.GetTimestamp"/>: a wall clock's step moves nothing).</summary>
    private long _lastOpenInDoubtAt;
    /// <summary>When the last session's stream broke (a <see cref="TimeProvider.GetTimestamp"/>), until a lease is granted again; under the gate.</summary>
    private long? _brokenAt;

    private async Task<TimeSpan> SessionStepAsync(CancellationToken cancellationToken)
    {
        if (_session is null)
        {
            lock (_gate)
            {
                if (_draining)
                {
                    // The drain removes the instance: no session is opened again; the drain stops the loop.
                    return Timeout.InfiniteTimeSpan;
                }

                _mayBeRegistered = true;
            }

            try
            {
                _session = await _transport.OpenSessionAsync(Instance, _requestedTtl, _requestTimeout, cancellationToken).ConfigureAwait(false);
            }
            catch (RegistryClientException)
            {
                lock (_gate)
                {
                    _mayBeRegistered = false;
                }

                throw;
            }
            catch (RegistryUnavailableException e)
            {
                OpensInDoubt(e.Unanswered);
                throw;
            }

            OpensInDoubt(_session.Unanswered);

            var first = await NextEventOrFailAsync(cancellationToken).ConfigureAwait(false);
            if (first.Name != "lease" || LeaseOf(first.Data) is not { Ttl: >= 1 } lease)
            {
                FailSession();
                throw new RegistryUnavailableException($"The session's stream did not start with its lease but with '{first.Name}' ({first.Data.Length} characters).");
            }

            Accept(lease);
            // The backoff starts over only once the session has lasted (see FailSession): a node or proxy that takes
            // sessions and drops them at once would otherwise have them opened again every second, for ever.
            _sessionOpenedAt = _time.GetTimestamp();
            Succeeded(resetBackoff: false);
            // Read on at once: the next step holds the session.
            return TimeSpan.Zero;
        }

        var ended = await NextEventOrFailAsync(cancellationToken).ConfigureAwait(false);
        SessionLasted();
        CloseSession();
        lock (_gate)
        {
            _registered = false;
        }

        if (ended.Name != "ended")
        {
            throw new RegistryUnavailableException($"The session's stream carried an unexpected '{ended.Name}' event.");
        }

        var reason = EndedReason(ended.Data);
        if (reason == "replaced" && _opensInDoubt > 0 && _time.GetElapsedTime(_lastOpenInDoubtAt) <= _requestTimeout + LateOpenWindow)
        {
            // Likely one of this lease's own earlier opens, committed late by a node that no longer holds its connection:
            // open again, once for each such open; a registration by someone else would replace this one again, and once
            // they are all accounted for, it is theirs. Nothing is this lease's to remove until it has opened again.
            _opensInDoubt--;
            lock (_gate)
            {
                _mayBeRegistered = false;
            }

            Log.SessionEnded(_logger, Instance, "replaced, soon after an open that got no answer");
            return Backoff.Jitter(_retryBaseDelay / 2, _retryBaseDelay);
        }

        if (reason == "replaced")
        {
            // Someone else registered this instance since: theirs it is. Say so and stop, and leave it to them: a dispose or
            // drain must not remove the registration that replaced this one.
            lock (_gate)
            {
                _mayBeRegistered = false;
            }

            Log.SessionReplaced(_logger, Instance);
            SetState(RegistryConnectionState.Replaced, new RegistryClientException(
                $"The session of {Instance.Application} {Instance.Protocol} {Instance.Addr} ended: another registration of the instance replaced it."));
            return Timeout.InfiniteTimeSpan;
        }

        lock (_gate)
        {
            if (_draining)
            {
                // Ended by the drain (unregistered): final; the drain stops the loop once it is answered.
                return Timeout.InfiniteTimeSpan;
            }
        }

        // Unregistered or evicted by other means while this process lives: open it again.
        Log.SessionEnded(_logger, Instance, reason);
        return Backoff.Jitter(_retryBaseDelay / 2, _retryBaseDelay);
    }

    /// <summary>The lease event's document; null when it is not one (what a proxy garbled must not leave the stream open).</summary>
    private static LeaseDocument? LeaseOf(string data)
    {
        try
        {
            return JsonSerializer.Deserialize(data, ClientJson.Default.LeaseDocument);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>The next event of the open session; a stream that ends, stalls past the idle timeout or breaks fails the session.</summary>
    private async Task<(string Name, string Data)> NextEventOrFailAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (await NextEventAsync(_session!.Reader, cancellationToken).ConfigureAwait(false) is { } next)
            {
                return next;
            }
        }
        catch (Exception e) when (e is IOException or HttpRequestException or TimeoutException)
        {
            FailSession();
            throw new RegistryUnavailableException($"The session's stream broke: {e.Message}", e);
        }
        catch
        {
            // Cancelled (disposed), or anything else: the connection goes with it.
            CloseSession();
            throw;
        }

        FailSession();
        throw new RegistryUnavailableException("The session's stream ended without an 'ended' event (its node stopped or the connection was cut).");
    }

    /// <summary>Counts opens that nodes took without answering; any of them may yet replace the session that did open.</summary>
    private void OpensInDoubt(int unanswered)
    {
        if (unanswered > 0)
        {
            // Those sent longer ago than the window have had their time to commit.
            _opensInDoubt = (_time.GetElapsedTime(_lastOpenInDoubtAt) <= _requestTimeout + LateOpenWindow ? _opensInDoubt : 0) + unanswered;
            _lastOpenInDoubtAt = _time.GetTimestamp();
        }
    }

    /// <summary>
    /// How long the open session's stream may stay silent: <see cref="RegistryClientOptions.SessionIdleTimeout"/>, or three of
    /// the keep-alive intervals its node announced if that is longer (a registry configured with keep-alives 20 s or more
    /// apart would otherwise have every healthy session cut, its instance removed and opened again, every 20 s).
    /// </summary>
    private TimeSpan SessionIdleTimeout =>
        _session?.KeepAlive is { } keepAlive && keepAlive * 3 > _sessionIdleTimeout ? keepAlive * 3 : _sessionIdleTimeout;

    /// <summary>Reads one server-sent event, skipping keep-alive comments; null at the end of the stream.</summary>
    private async Task<(string Name, string Data)?> NextEventAsync(StreamReader reader, CancellationToken cancellationToken)
    {
        var idleTimeout = SessionIdleTimeout;
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        string? name = null;
        var data = new StringBuilder();
        while (true)
        {
            // Keep-alives come every few seconds: silence this long means the node or the path to it is gone.
            idle.CancelAfter(idleTimeout);
            string? line;
            try
            {
                line = await reader.ReadLineAsync(idle.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"Nothing came on the session's stream for {idleTimeout}.", e);
            }

            if (line is null)
            {
                return null;
            }

            if (line.Length == 0)
            {
                if (name is not null || data.Length > 0)
                {
                    return (name ?? "message", data.ToString());
                }
            }
            else if (line.StartsWith("event:", StringComparison.Ordinal))
            {
                name = line["event:".Length..].Trim();
            }
            else if (line.StartsWith("data:", StringComparison.Ordinal))
            {
                data.Append(data.Length > 0 ? "\n" : "").Append(line["data:".Length..].TrimStart());
            }
        }
    }

    private static string EndedReason(string data)
    {
        try
        {
            using var document = JsonDocument.Parse(data);
            return document.RootElement.TryGetProperty("reason", out var reason) && reason.ValueKind == JsonValueKind.String ? reason.GetString()! : "unknown";
        }
        catch (JsonException)
        {
            return "unknown";
        }
    }

    /// <summary>
    /// Closes a session that failed and makes the next attempt start at another server: at once (the backoff starts
    /// over) when the session had lasted, after the growing backoff when it failed sooner.
    /// </summary>
    private void FailSession()
    {
        SessionLasted();
        if (_session is { } session)
        {
            _transport.Avoid(session.Server);
        }

        CloseSession();
        lock (_gate)
        {
            _registered = false;
            _brokenAt = _time.GetTimestamp();
        }
    }

    private void CloseSession()
    {
        _session?.Dispose();
        _session = null;
        _sessionOpenedAt = 0;
    }

    /// <summary>Starts the backoff over if the open session has lasted the idle timeout since its lease came (it worked).</summary>
    private void SessionLasted()
    {
        if (_sessionOpenedAt != 0 && _time.GetElapsedTime(_sessionOpenedAt) >= _sessionIdleTimeout)
        {
            _backoff.Reset();
        }
    }
}
