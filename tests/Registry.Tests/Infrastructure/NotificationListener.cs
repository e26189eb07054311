using System.Collections.Concurrent;
using Npgsql;

namespace Registry.Tests.Infrastructure;

/// <summary>A LISTEN session of the test's own on the change channel (or another).</summary>
public sealed class NotificationListener : IAsyncDisposable
{
    private readonly NpgsqlConnection _connection;
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<string> _payloads = new();
    private readonly ConcurrentDictionary<string, TaskCompletionSource> _waiting = new();
    private Task _loop = Task.CompletedTask;

    private NotificationListener(NpgsqlConnection connection) => _connection = connection;

    public static async Task<NotificationListener> StartAsync(string connectionString, string channel = "registry_changes")
    {
        var listener = new NotificationListener(new NpgsqlConnection(connectionString));
        await listener._connection.OpenAsync();
        listener._connection.Notification += (_, e) =>
        {
            listener._payloads.Enqueue(e.Payload);
            if (listener._waiting.TryGetValue(ApplicationOf(e.Payload), out var waiter))
            {
                waiter.TrySetResult();
            }
        };
        await using (var listen = new NpgsqlCommand($"LISTEN {channel}", listener._connection))
        {
            await listen.ExecuteNonQueryAsync();
        }

        listener._loop = listener.RunAsync();
        return listener;
    }

    /// <summary>Notifications received for the application.</summary>
    public int Count(string application) => Payloads(application).Length;

    /// <summary>The payloads received for the application, in order, without the tag a node's own batch adds to the first line.</summary>
    public string[] Payloads(string application) => _payloads.Where(p => ApplicationOf(p) == application).Select(Untagged).ToArray();

    /// <summary>The applications of the notifications received, in the order they came (the order their transactions committed).</summary>
    public string[] Applications() => _payloads.Select(ApplicationOf).ToArray();

    /// <summary>The tags of the application's notifications, in order (null for an untagged one, such as a sweep's).</summary>
    public string?[] Tags(string application) =>
        _payloads.Where(p => ApplicationOf(p) == application).Select(p => p.Split('\n')[0].Split(' ') is [_, var tag] ? tag : null).ToArray();

    /// <summary>Completes once <paramref name="condition"/> holds for the number of the application's notifications.</summary>
    public async Task WaitUntilAsync(string application, Func<int, bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition(Count(application)))
        {
            var waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting[application] = waiter;
            if (condition(Count(application)))
            {
                break;
            }

            await waiter.Task.WaitAsync(deadline - DateTime.UtcNow);
        }
    }

    public Task WaitForAsync(string application)
    {
        var waiter = _waiting.GetOrAdd(application, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        if (_payloads.Any(p => ApplicationOf(p) == application))
        {
            waiter.TrySetResult();
        }

        return waiter.Task.WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>The application is the payload's first word (a tag may follow it); changed instances may follow on lines of their own.</summary>
    private static string ApplicationOf(string payload) => payload.Split('\n')[0].Split(' ')[0];

    private static string Untagged(string payload)
    {
        var lines = payload.Split('\n');
        lines[0] = ApplicationOf(payload);
        return string.Join('\n', lines);
    }

    private async Task RunAsync()
    {
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                await _connection.WaitAsync(_stop.Token);
            }
        }
        catch (OperationCanceledException)
        {
            // Stopped.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _loop;
        await _connection.DisposeAsync();
        _stop.Dispose();
    }
}
