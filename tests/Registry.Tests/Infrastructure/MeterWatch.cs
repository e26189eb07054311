using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace Registry.Tests.Infrastructure;

/// <summary>
/// Sums the measurements of one instrument so a test can await a condition on it ("one poll
/// is parked", "500 renewals written") instead of sleeping.
/// </summary>
public sealed class MeterWatch : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly Lock _gate = new();
    private readonly List<(Func<double, bool> Condition, TaskCompletionSource Reached)> _waiters = [];
    private double _total;

    private MeterWatch(Func<Instrument, bool> select, Func<ReadOnlySpan<KeyValuePair<string, object?>>, bool> accept)
    {
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (select(instrument))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((_, value, tags, _) => Add(value, tags, accept));
        _listener.SetMeasurementEventCallback<int>((_, value, tags, _) => Add(value, tags, accept));
        _listener.SetMeasurementEventCallback<double>((_, value, tags, _) => Add(1, tags, accept));
        _listener.Start();
    }

    /// <summary>One of a node's registry instruments (each node has its own meter scope).</summary>
    public static MeterWatch Node(WebApplicationFactory<Program> node, string instrument, string? tag = null, string? value = null)
    {
        var scope = node.Services.GetRequiredService<IMeterFactory>();
        return new MeterWatch(
            i => i.Name == instrument && ReferenceEquals(i.Meter.Scope, scope),
            tags => tag is null || HasTag(tags, tag, value));
    }

    /// <summary>What one of a node's observable gauges reads now.</summary>
    public static double Read(WebApplicationFactory<Program> node, string instrument)
    {
        using var watch = Node(node, instrument);
        watch._listener.RecordObservableInstruments();
        return watch.Total;
    }

    /// <summary>Statements Npgsql executed for the data source whose Application Name is given.</summary>
    public static MeterWatch NpgsqlStatements(string applicationName) => new(
        i => i.Meter.Name == "Npgsql" && i.Name == "db.client.operation.duration",
        tags =>
        {
            foreach (var (_, v) in tags)
            {
                // The pool name is the data source's name: its Application Name, or its
                // connection string (which carries it) in Npgsql versions before that default.
                if (v is string s && s.Contains(applicationName, StringComparison.Ordinal))
                {
                    return true;
                }
            }

            return false;
        });

    public double Total
    {
        get
        {
            lock (_gate)
            {
                return _total;
            }
        }
    }

    public Task WaitUntilAsync(Func<double, bool> condition, TimeSpan? timeout = null)
    {
        lock (_gate)
        {
            if (condition(_total))
            {
                return Task.CompletedTask;
            }

            var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((condition, reached));
            return reached.Task.WaitAsync(timeout ?? TimeSpan.FromSeconds(10));
        }
    }

    /// <summary>Completes once the total is at least <paramref name="count"/>.</summary>
    public Task WaitForAsync(double count, TimeSpan? timeout = null) => WaitUntilAsync(total => total >= count, timeout);

    private static bool HasTag(ReadOnlySpan<KeyValuePair<string, object?>> tags, string tag, string? value)
    {
        foreach (var (k, v) in tags)
        {
            if (k == tag && (value is null || Equals(v, value)))
            {
                return true;
            }
        }

        return false;
    }

    private void Add(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags, Func<ReadOnlySpan<KeyValuePair<string, object?>>, bool> accept)
    {
        if (!accept(tags))
        {
            return;
        }

        lock (_gate)
        {
            _total += value;
            foreach (var waiter in _waiters.Where(w => w.Condition(_total)).ToArray())
            {
                waiter.Reached.TrySetResult();
                _waiters.Remove(waiter);
            }
        }
    }

    public void Dispose() => _listener.Dispose();
}

/// <summary>Parked long polls on one node.</summary>
public static class ParkedPolls
{
    public static MeterWatch On(WebApplicationFactory<Program> node) => MeterWatch.Node(node, "registry.polls.parked");

    public static Task WaitForNoneAsync(this MeterWatch parked) => parked.WaitUntilAsync(total => total <= 0);
}
