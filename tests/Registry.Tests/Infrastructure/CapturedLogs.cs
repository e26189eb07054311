using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Registry.Tests.Infrastructure;

/// <summary>Keeps every log line a node writes (with its exception), for tests that grep them.</summary>
public sealed class CapturedLogs : ILoggerProvider
{
    private readonly ConcurrentQueue<(string Category, string Message)> _entries = new();

    public IReadOnlyList<(string Category, string Message)> Entries => [.. _entries];

    public string Text => string.Join('\n', _entries.Select(e => $"{e.Category}: {e.Message}"));

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(CapturedLogs logs, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            logs._entries.Enqueue((category, formatter(state, exception) + (exception is null ? "" : "\n" + exception)));
    }
}
