using Polly;
using Polly.Retry;

namespace Registry.Client;

/// <summary>
/// The retry pipeline of the background loops: retries <see cref="RegistryUnavailableException"/>
/// for as long as it takes, with exponential backoff and decorrelated jitter up to a cap (so a
/// fleet does not come back in step), and waits at least what a <c>Retry-After</c> asked for.
/// </summary>
internal static class Backoff
{
    public static ResiliencePipeline Create(
        TimeSpan baseDelay, TimeSpan maxDelay, TimeProvider time, Func<OnRetryArguments<object>, ValueTask> onRetry) =>
        new ResiliencePipelineBuilder { TimeProvider = time }
            .AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<RegistryUnavailableException>(),
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = baseDelay,
                MaxDelay = maxDelay,
                MaxRetryAttempts = int.MaxValue,
                DelayGenerator = static args => ValueTask.FromResult(
                    args.Outcome.Exception is RegistryUnavailableException { RetryAfter: { } after } ? WithJitter(after) : (TimeSpan?)null),
                OnRetry = onRetry,
            })
            .Build();

    /// <summary>Retry-After plus up to a fifth more, so clients told the same time do not return together.</summary>
    private static TimeSpan WithJitter(TimeSpan retryAfter) =>
#pragma warning disable CA5394 // Jitter, not security.
        retryAfter + (retryAfter * (Random.Shared.NextDouble() / 5));
#pragma warning restore CA5394
}
