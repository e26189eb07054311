namespace Registry.Client;

/// <summary>
/// The delays of a background loop between failed attempts: exponential from the base delay up to a cap,
/// each drawn at random from its upper half (so a fleet does not come back in step, yet no delay collapses
/// towards zero), and never shorter than what a <c>Retry-After</c> asked for — but never past a ceiling the
/// caller sets (a lease must be renewed before it runs out, whatever a server asked), less up to a fifth of it,
/// and never under the base delay (up to a fifth above it).
/// </summary>
internal sealed class Backoff(TimeSpan baseDelay, TimeSpan maxDelay)
{
    /// <summary>The longest a <c>Retry-After</c> is honoured for (or the cap of the backoff, if longer).</summary>
    public static readonly TimeSpan LongestRetryAfter = TimeSpan.FromMinutes(5);

    private int _failures;

    /// <summary>The failures since the last success.</summary>
    public int Failures => _failures;

    /// <summary>Starts over after a success.</summary>
    public void Reset() => _failures = 0;

    /// <summary>The delay before the next attempt, after a failure.</summary>
    /// <param name="error">What failed; a <see cref="RegistryUnavailableException.RetryAfter"/> is honoured.</param>
    /// <param name="ceiling">The longest wait the caller can afford, if any.</param>
    public TimeSpan Next(Exception error, TimeSpan? ceiling = null)
    {
        var exponent = Math.Min(_failures, 30);
        _failures++;
        var ramp = TimeSpan.FromTicks(Math.Min(maxDelay.Ticks, (long)Math.Min(long.MaxValue / 2, baseDelay.Ticks * Math.Pow(2, exponent))));
        var delay = Jitter(ramp / 2, ramp);
        // max(backoff, Retry-After): a Retry-After of 0 or a date in the past must not turn backoff into a busy loop.
        if (error is RegistryUnavailableException { RetryAfter: { } after } && after > delay)
        {
            // A proxy's Retry-After of an hour (or a date years ahead) must not silence the loop for that long; capped, a
            // fleet still spreads out.
            var longest = maxDelay > LongestRetryAfter ? maxDelay : LongestRetryAfter;
            delay = after * 1.2 <= longest ? Jitter(after, after * 1.2) : Jitter(longest / 1.2, longest);
        }

        if (ceiling is { } limit && delay > limit)
        {
            // Jittered as well: clients whose leases share a deadline would otherwise all come back at one instant.
            delay = limit <= baseDelay ? Jitter(baseDelay, baseDelay * 1.2) : Jitter(limit * 0.8 > baseDelay ? limit * 0.8 : baseDelay, limit);
        }

        return delay;
    }

    /// <summary>A delay between <paramref name="low"/> and <paramref name="high"/>, for refusals that are retried at a fixed pace.</summary>
    public static TimeSpan Jitter(TimeSpan low, TimeSpan high) =>
#pragma warning disable CA5394 // Jitter, not security.
        low + ((high - low) * Random.Shared.NextDouble());
#pragma warning restore CA5394
}
