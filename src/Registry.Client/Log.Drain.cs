using Microsoft.Extensions.Logging;

namespace Registry.Client;

/// <summary>The drain's log messages.</summary>
internal static partial class Log
{
    [LoggerMessage(Level = LogLevel.Information, Message = "Drained {Instance}: {Delivered} consumers told, {Pending} pending, {Nodes} registry nodes reported, complete {Complete}")]
    public static partial void Drained(ILogger logger, ProviderInstance instance, int delivered, int pending, int nodes, bool complete);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not drain {Instance}; unregistering it plainly: {Reason}")]
    public static partial void DrainFailed(ILogger logger, ProviderInstance instance, string reason);
}
