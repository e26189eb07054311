using Microsoft.Extensions.Time.Testing;

namespace Registry.Client.UnitTests.Infrastructure;

/// <summary>
/// A <see cref="FakeTimeProvider"/> that reports every timer created on it, so a test can wait until the client
/// has started a delay (and read how long it chose) before moving time — no race, no sleep.
/// </summary>
public sealed class TestClock : FakeTimeProvider
{
    private readonly object _gate = new();
    private readonly List<TimeSpan> _created = [];
    private readonly SemaphoreSlim _signal = new(0);
    private int _cursor;

    public TestClock()
        : base(new DateTimeOffset(2026, 11, 27, 12, 0, 0, TimeSpan.Zero))
    {
    }

    /// <summary>How far the wall clock has been stepped (by NTP, an operator) from the time that passed: moves <see cref="GetUtcNow"/> only.</summary>
    public TimeSpan WallClockStep { get; set; }

    public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + WallClockStep;

    public override long TimestampFrequency => TimeSpan.TicksPerSecond;

    /// <summary>The time that passed (never the wall clock's steps), as a monotonic clock counts it.</summary>
    public override long GetTimestamp() => base.GetUtcNow().UtcTicks;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = base.CreateTimer(callback, state, dueTime, period);
        lock (_gate)
        {
            _created.Add(dueTime);
        }

        _signal.Release();
        return timer;
    }

    /// <summary>
    /// Waits (in real time, bounded) for the next timer created since the last one this returned whose due time
    /// satisfies <paramref name="match"/>; returns that due time.
    /// </summary>
    public async Task<TimeSpan> NextTimerAsync(Func<TimeSpan, bool> match)
    {
        using var deadline = new CancellationTokenSource(Scripted.Patience);
        while (true)
        {
            lock (_gate)
            {
                for (; _cursor < _created.Count; _cursor++)
                {
                    if (match(_created[_cursor]))
                    {
                        return _created[_cursor++];
                    }
                }
            }

            await _signal.WaitAsync(deadline.Token);
        }
    }

    /// <summary>Waits for the client's next delay of at most <paramref name="atMost"/> (not a per-request timeout) and lets it pass.</summary>
    public async Task<TimeSpan> PassNextDelayAsync(TimeSpan atMost)
    {
        var delay = await NextTimerAsync(d => d > TimeSpan.Zero && d <= atMost && !Scripted.IsRequestTimeout(d));
        Advance(delay);
        return delay;
    }
}
