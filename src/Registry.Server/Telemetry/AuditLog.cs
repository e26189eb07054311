using System.Diagnostics.Metrics;
using Registry.Model;

namespace Registry.Telemetry;

/// <summary>
/// Who changed what: every registration, unregistration, session start and end, eviction and token change is logged (category
/// <c>Registry.Audit</c>) with the credential's id, never a secret, and counted in
/// <c>registry.audit.events</c> by action.
/// </summary>
internal sealed partial class AuditLog
{
    private readonly ILogger _logger;
    private readonly Counter<long> _events;

    public AuditLog(ILoggerFactory loggers, IMeterFactory meters)
    {
        _logger = loggers.CreateLogger("Registry.Audit");
        _events = meters.Create(RegistryMetrics.MeterName).CreateCounter<long>("registry.audit.events", "{event}",
            "Audited changes, by action (register, unregister, session_start, session_end, evict: one per instance, probe_evict, token_create, token_revoke, token_forget).");
    }

    public void Registered(string credential, InstanceKey key, bool created)
    {
        Count("register");
        LogRegistered(_logger, key.Application, key.Protocol, key.Addr, created ? "created" : "renewed", credential);
    }

    public void Unregistered(string credential, InstanceKey key)
    {
        Count("unregister");
        LogUnregistered(_logger, key.Application, key.Protocol, key.Addr, credential);
    }

    public void SessionStarted(string credential, InstanceKey key, int ttlSeconds)
    {
        Count("session_start");
        LogSessionStarted(_logger, key.Application, key.Protocol, key.Addr, ttlSeconds, credential);
    }

    /// <summary>A session ended; <paramref name="reason"/> says how (closed: the instance was removed with it).</summary>
    public void SessionEnded(string credential, InstanceKey key, string reason)
    {
        Count("session_end");
        LogSessionEnded(_logger, key.Application, key.Protocol, key.Addr, reason, credential);
    }

    /// <summary>Instances the sweeper removed because their leases ran out: no credential did it.</summary>
    public void Evicted(string application, int instances)
    {
        _events.Add(instances, new KeyValuePair<string, object?>("action", "evict"));
        LogEvicted(_logger, instances, application);
    }

    /// <summary>An instance whose probes kept failing: its lease is ended now, and the sweeper evicts it within self-preservation's budget.</summary>
    public void ProbeFailed(InstanceKey key, int failures, string node)
    {
        Count("probe_evict");
        LogProbeFailed(_logger, key.Application, key.Protocol, key.Addr, failures, node);
    }

    public void TokenCreated(string by, string id, bool admin, IReadOnlyList<string> register, IReadOnlyList<string> subscribe)
    {
        Count("token_create");
        LogTokenCreated(_logger, id, admin, string.Join(',', register), string.Join(',', subscribe), by);
    }

    /// <summary>
    /// A token created by the server binary's <c>tokens create</c> command, which runs without
    /// the web host (so without its meters): logged with the same line, by the command line.
    /// </summary>
    public static void TokenCreatedOffline(ILoggerFactory loggers, string id, bool admin, IReadOnlyList<string> register, IReadOnlyList<string> subscribe) =>
        LogTokenCreated(loggers.CreateLogger("Registry.Audit"), id, admin, string.Join(',', register), string.Join(',', subscribe), "the tokens create command");

    public void TokenRevoked(string credential, string id)
    {
        Count("token_revoke");
        LogTokenRevoked(_logger, id, credential);
    }

    /// <summary>A token deleted because it expired long ago (<c>Registry:Auth:ForgetExpiredAfter</c>): no credential did it.</summary>
    public void TokenForgotten(string id, DateTimeOffset expired)
    {
        LogTokenForgotten(_logger, id, expired);
        Count("token_forget");
    }

    private void Count(string action) => _events.Add(1, new KeyValuePair<string, object?>("action", action));

    [LoggerMessage(Level = LogLevel.Information, Message = "register {Application} {Protocol} {Addr} ({Result}) by {Credential}")]
    private static partial void LogRegistered(ILogger logger, string application, string protocol, string addr, string result, string credential);

    [LoggerMessage(Level = LogLevel.Information, Message = "unregister {Application} {Protocol} {Addr} by {Credential}")]
    private static partial void LogUnregistered(ILogger logger, string application, string protocol, string addr, string credential);

    [LoggerMessage(Level = LogLevel.Information, Message = "session start {Application} {Protocol} {Addr} (ttl {Ttl} s) by {Credential}")]
    private static partial void LogSessionStarted(ILogger logger, string application, string protocol, string addr, int ttl, string credential);

    [LoggerMessage(Level = LogLevel.Information, Message = "session end {Application} {Protocol} {Addr} ({Reason}) by {Credential}")]
    private static partial void LogSessionEnded(ILogger logger, string application, string protocol, string addr, string reason, string credential);

    [LoggerMessage(Level = LogLevel.Information, Message = "evict {Instances} instances of {Application} (leases ran out) by the sweeper")]
    private static partial void LogEvicted(ILogger logger, int instances, string application);

    [LoggerMessage(Level = LogLevel.Information, Message = "probe_evict {Application} {Protocol} {Addr} after {Failures} failed probes by node {Node}; the sweeper evicts it")]
    private static partial void LogProbeFailed(ILogger logger, string application, string protocol, string addr, int failures, string node);

    [LoggerMessage(Level = LogLevel.Information, Message = "token {TokenId} created (admin {Admin}, register [{Register}], subscribe [{Subscribe}]) by {Credential}")]
    private static partial void LogTokenCreated(ILogger logger, string tokenId, bool admin, string register, string subscribe, string credential);

    [LoggerMessage(Level = LogLevel.Information, Message = "token {TokenId} forgotten (expired at {Expired:O}) by the registry")]
    private static partial void LogTokenForgotten(ILogger logger, string tokenId, DateTimeOffset expired);

    [LoggerMessage(Level = LogLevel.Information, Message = "token {TokenId} revoked by {Credential}")]
    private static partial void LogTokenRevoked(ILogger logger, string tokenId, string credential);
}
