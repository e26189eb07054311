using System.Diagnostics;
using Microsoft.Extensions.Options;
using Registry.Model;
using Registry.Telemetry;

namespace Registry.Subscription;

/// <summary>How a poll ended.</summary>
internal enum PollEnd
{
    /// <summary>The caller's version was not current: answered at once.</summary>
    Immediate,

    /// <summary>The answer changed while the poll was parked.</summary>
    Changed,

    /// <summary>The wait ran out with the caller's version still current.</summary>
    TimedOut,

    /// <summary>The node is shutting down and released the poll.</summary>
    Shutdown,

    /// <summary>The client went away; nothing is to be written.</summary>
    ClientGone,

    /// <summary>Holding it would pass a parking limit: answered 429.</summary>
    Refused,
}

/// <summary>
/// The versions a poll is held on while one of them is current: a query's <c>version</c>, or the entity tags of an
/// <c>If-None-Match</c> (RFC 9110: any of them; <c>*</c> whatever is current).
/// </summary>
internal readonly struct HeldVersions
{
    // One version (a poll's ?version=, the common case) needs no array.
    private readonly string? _one;
    private readonly string[]? _many;

    private HeldVersions(string? one, string[]? many)
    {
        _one = one;
        _many = many;
    }

    /// <summary><c>If-None-Match: *</c>: held on whatever version is current.</summary>
    public static HeldVersions Any => default;

    /// <summary>Held on <paramref name="version"/>; null (answer at once) when there is none.</summary>
    public static HeldVersions? Of(string? version) => version is null ? null : new(version, null);

    /// <summary>Held on any of <paramref name="versions"/>.</summary>
    public static HeldVersions Of(IEnumerable<string> versions) => new(null, [.. versions]);

    public bool Holds(string current) => (_one is null && _many is null) || Lists(current);

    /// <summary>Whether <paramref name="version"/> is one of those named (not merely current, as for <c>*</c>).</summary>
    public bool Lists(string version) => _one is not null ? _one == version : _many is not null && Array.IndexOf(_many, version) >= 0;
}

/// <summary>The answer to write and why; <see cref="Consumer"/> is set when the poll parked, to be finished once written.</summary>
internal readonly record struct PollOutcome(Answer Answer, PollEnd End, ParkedConsumer? Consumer = null);

/// <summary>
/// Parks a long poll on its subscription's change signal (never a loop, never a database
/// query) until the answer moves away from the caller's version, the wait runs out, the
/// client leaves or the node shuts down.
/// </summary>
internal sealed class LongPoll(
    SubscriptionHub hub,
    IOptions<SubscriptionOptions> options,
    TimeProvider time,
    ParkingLot parking,
    IHostApplicationLifetime lifetime,
    RegistryMetrics metrics,
    AnswerWriters writers)
{
    private readonly SubscriptionOptions _options = options.Value;

    /// <summary>Whose turn it is to write a large answer (taken with the poll, so shutdown's last answers need no service look-up).</summary>
    public AnswerWriters Writers => writers;

    /// <summary>
    /// A source cancelled when a credential that expires at <paramref name="expires"/> does, for a poll held with it;
    /// null when no hold lasts that long (so a credential that lives for hours, as most do, costs a poll no timer).
    /// </summary>
    public CancellationTokenSource? Expiring(DateTimeOffset expires)
    {
        var left = expires - time.GetUtcNow();
        var longest = TimeSpan.FromSeconds(_options.MaxWaitSeconds) * (1 + 1.0 / _options.JitterDivisor);
        // Whole milliseconds rounded up, as timers count them: never before the credential has expired.
        return left <= longest ? new CancellationTokenSource(left > TimeSpan.Zero ? TimeSpan.FromMilliseconds(Math.Ceiling(left.TotalMilliseconds)) : TimeSpan.Zero, time) : null;
    }

    /// <summary>The hold for a requested wait: defaulted, clamped to the cap, plus up to wait/16 of jitter.</summary>
    public TimeSpan HoldFor(long? waitSeconds)
    {
        var wait = TimeSpan.FromSeconds(Math.Min(waitSeconds ?? _options.DefaultWaitSeconds, _options.MaxWaitSeconds));
        var jitter = wait / _options.JitterDivisor * Random.Shared.NextDouble();
        return wait + jitter;
    }

    /// <exception cref="TooManySubscriptionsException">The subscription is new and the node holds as many as it may.</exception>
    public async Task<PollOutcome> PollAsync(
        IReadOnlyList<SubscriptionEntry> entries, HeldVersions? held, long? waitSeconds, string client, CancellationToken requestAborted)
    {
        var view = hub.Acquire(entries);
        try
        {
            Answer answer;
            try
            {
                // Waits for a change the node applied (a write it acknowledged) to be in the answer.
                answer = await view.FreshAsync(requestAborted);
            }
            catch (OperationCanceledException) when (requestAborted.IsCancellationRequested)
            {
                return new(view.Current, PollEnd.ClientGone);
            }

            if (held is not { } versions || !versions.Holds(answer.Version))
            {
                return new(answer, PollEnd.Immediate);
            }

            // From here on held on the one that is current.
            var version = answer.Version;

            var hold = HoldFor(waitSeconds);
            if (hold <= TimeSpan.Zero)
            {
                return new(answer, PollEnd.TimedOut);
            }

            if (!parking.TryEnter(client, view))
            {
                return new(answer, PollEnd.Refused);
            }

            try
            {
                return await ParkAsync(view, version, hold, requestAborted);
            }
            finally
            {
                parking.Leave(client, view);
            }
        }
        finally
        {
            hub.Release(view);
        }
    }

    private async Task<PollOutcome> ParkAsync(SubscriptionView view, string version, TimeSpan hold, CancellationToken requestAborted)
    {
        if (lifetime.ApplicationStopping.IsCancellationRequested)
        {
            return await ReleaseOnShutdownAsync(view, version, requestAborted);
        }

        // Parked in the view's list (so a drain can follow it) only while it holds the current version.
        var consumer = new ParkedConsumer();
        if (view.Park(consumer, version) is not { } changed)
        {
            return new(view.Current, PollEnd.Immediate);
        }

        metrics.PollParked();
        try
        {
            // One timer and one cancellation registration per parked poll; the change signal
            // is shared by every consumer of the subscription (and is also raised on shutdown).
            await changed.WaitAsync(hold, time, requestAborted);
        }
        catch (TimeoutException)
        {
            view.Unpark(consumer);
            // The answer may have moved on at the same moment: then it is a change, not a timeout.
            var now = view.Current;
            return new(now, string.Equals(now.Version, version, StringComparison.Ordinal) ? PollEnd.TimedOut : PollEnd.Changed, consumer);
        }
        catch (OperationCanceledException) when (requestAborted.IsCancellationRequested)
        {
            view.Unpark(consumer);
            consumer.Finish(sent: false);
            return new(view.Current, PollEnd.ClientGone);
        }
        finally
        {
            metrics.PollUnparked();
        }

        if (lifetime.ApplicationStopping.IsCancellationRequested)
        {
            return (await ReleaseOnShutdownAsync(view, version, requestAborted)) with { Consumer = consumer };
        }

        var answer = view.Current;
        metrics.DeliveryDelay(Stopwatch.GetElapsedTime(answer.ComputedAt));
        return new(answer, PollEnd.Changed, consumer);
    }

    /// <summary>
    /// Answers a poll released by shutdown after a random part of the spread, so consumers do not
    /// all reconnect at once; as a change when the answer moved from <paramref name="version"/> meanwhile.
    /// </summary>
    private async Task<PollOutcome> ReleaseOnShutdownAsync(SubscriptionView view, string version, CancellationToken requestAborted)
    {
        var delay = _options.ShutdownSpread * Random.Shared.NextDouble();
        try
        {
            await Task.Delay(delay, time, requestAborted);
        }
        catch (OperationCanceledException)
        {
            return new(view.Current, PollEnd.ClientGone);
        }

        var answer = view.Current;
        return new(answer, string.Equals(answer.Version, version, StringComparison.Ordinal) ? PollEnd.Shutdown : PollEnd.Changed);
    }
}
