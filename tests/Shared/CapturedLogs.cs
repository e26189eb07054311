using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Registry.Testing;

/// <summary>One captured log entry.</summary>
public sealed record LogEntry(LogLevel Level, string Category, string Message, Exception? Exception);

/// <summary>
/// Keeps every log entry (with its exception), for tests that assert what was written and what
/// must not be (a storm during an outage, a secret). One file, linked into each test project.
/// </summary>
public sealed class CapturedLogs : ILoggerProvider
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();

    public IReadOnlyList<LogEntry> Entries => [.. _entries];

    /// <summary>Everything written, exceptions included, one entry per line.</summary>
    public string Text => string.Join('\n', _entries.Select(e => $"{e.Category}: {e.Message}" + (e.Exception is null ? "" : "\n" + e.Exception)));

    public int Count(LogLevel atLeast) => _entries.Count(e => e.Level >= atLeast);

    /// <summary>A logger factory that writes here at every level.</summary>
    public ILoggerFactory Factory() => LoggerFactory.Create(logging => logging.AddProvider(this).SetMinimumLevel(LogLevel.Trace));

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
            logs._entries.Enqueue(new LogEntry(logLevel, category, formatter(state, exception), exception));
    }
}
