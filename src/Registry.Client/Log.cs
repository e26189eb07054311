using Microsoft.Extensions.Logging;

namespace Registry.Client;

/// <summary>The client's log messages. Outages log one warning and then stay at debug level, so a long outage is no log storm.</summary>
internal static partial class Log
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Registered {Instance} with a {Ttl} s lease")]
    public static partial void Registered(ILogger logger, ProviderInstance instance, int ttl);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not register {Instance} now; will keep trying in the background: {Reason}")]
    public static partial void RegisterDeferred(ILogger logger, ProviderInstance instance, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The registry does not know {Instance} (expired or removed); registering again")]
    public static partial void HeartbeatNotFound(ILogger logger, ProviderInstance instance);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The registry is unreachable for {What}; retrying with backoff: {Reason}")]
    public static partial void OutageStarted(ILogger logger, string what, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Retry {Attempt} for {What} in {Delay}: {Reason}")]
    public static partial void Retrying(ILogger logger, int attempt, string what, TimeSpan delay, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "The registry is reachable again for {What}")]
    public static partial void OutageEnded(ILogger logger, string what);

    [LoggerMessage(Level = LogLevel.Error, Message = "The registry refused {What}; the subscription ends")]
    public static partial void Refused(ILogger logger, string what, Exception exception);

    [LoggerMessage(Level = LogLevel.Error, Message = "The registry refused {What}; trying again in {Delay}")]
    public static partial void RefusedRetrying(ILogger logger, string what, TimeSpan delay, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The session of {Instance} ended: another registration of the instance replaced it; this lease stops")]
    public static partial void SessionReplaced(ILogger logger, ProviderInstance instance);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The session of {Instance} ended ({Reason}); opening it again")]
    public static partial void SessionEnded(ILogger logger, ProviderInstance instance, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Unregistering {Instance}: the registry did not know it")]
    public static partial void NotRegistered(ILogger logger, ProviderInstance instance);

    [LoggerMessage(Level = LogLevel.Information, Message = "Unregistered {Instance}")]
    public static partial void Unregistered(ILogger logger, ProviderInstance instance);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not unregister {Instance}; its lease will expire on its own: {Reason}")]
    public static partial void UnregisterFailed(ILogger logger, ProviderInstance instance, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A handler of the subscription's Changed event threw; the subscription goes on")]
    public static partial void HandlerFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "A callback registered on a change token of the registry client threw; the change was delivered to the rest")]
    public static partial void ChangeCallbackFailed(ILogger logger, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Starting from the cached answer {Version} in {File} ({Endpoints} endpoints)")]
    public static partial void CacheLoaded(ILogger logger, string version, string file, int endpoints);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Ignoring the cache file {File}: {Reason}")]
    public static partial void CacheIgnored(ILogger logger, string file, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not write the cache file {File}: {Reason}")]
    public static partial void CacheWriteFailed(ILogger logger, string file, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Deleted the cache file {File}: no subscription has used it since {LastWritten:O}")]
    public static partial void CacheForgotten(ILogger logger, string file, DateTime lastWritten);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not clear old files from the cache folder {Directory}: {Reason}")]
    public static partial void CacheSweepFailed(ILogger logger, string directory, string reason);
}
