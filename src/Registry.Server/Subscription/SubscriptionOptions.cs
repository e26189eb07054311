using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;

namespace Registry.Subscription;

/// <summary>Long polling (section <c>Registry:Subscriptions</c>).</summary>
public sealed class SubscriptionOptions
{
    /// <summary>Hold time when <c>wait</c> is absent, in seconds.</summary>
    [Range(0, 3600)]
    public int DefaultWaitSeconds { get; set; } = 30;

    /// <summary>Largest hold time; larger <c>wait</c> values are clamped (keep it under proxies' idle timeouts).</summary>
    [Range(0, 3600)]
    public int MaxWaitSeconds { get; set; } = 55;

    /// <summary>Random jitter added to a hold: up to wait divided by this.</summary>
    [Range(1, 1_000_000)]
    public int JitterDivisor { get; set; } = 16;

    /// <summary>On shutdown, parked polls are answered spread over this long so consumers do not reconnect at once.</summary>
    public TimeSpan ShutdownSpread { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>
    /// How many answers larger than 64 KiB the node writes at a time (0: one per processor). The
    /// rest wait their turn, so that a change fanned out to many consumers of a big application
    /// does not hold up the node's other replies.
    /// </summary>
    [Range(0, 100_000)]
    public int LargeAnswerWriters { get; set; }

    /// <summary>
    /// How long a distinct subscription nobody holds is kept composed, for a consumer that comes
    /// back (the next poll, a client reading with GET every few seconds). It goes after this, or
    /// sooner when a change touches one of its applications (rather than being recomposed).
    /// </summary>
    public TimeSpan KeepIdleFor { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>A large answer whose consumer has not taken a 64 KiB chunk within this long gives up its turn to the next.</summary>
    public TimeSpan SlowReaderYield { get; set; } = TimeSpan.FromMilliseconds(50);
}

/// <summary>The rules of <see cref="SubscriptionOptions"/> that data annotations cannot say.</summary>
internal sealed class SubscriptionOptionsValidator : IValidateOptions<SubscriptionOptions>
{
    public ValidateOptionsResult Validate(string? name, SubscriptionOptions options) =>
        options.DefaultWaitSeconds > options.MaxWaitSeconds ? ValidateOptionsResult.Fail("Registry:Subscriptions needs DefaultWaitSeconds <= MaxWaitSeconds.")
        : options.KeepIdleFor < TimeSpan.Zero || options.KeepIdleFor > TimeSpan.FromDays(1) ? ValidateOptionsResult.Fail("Registry:Subscriptions:KeepIdleFor must be between 0 and 1 day.")
        : options.ShutdownSpread < TimeSpan.Zero || options.ShutdownSpread > TimeSpan.FromMinutes(10) ? ValidateOptionsResult.Fail("Registry:Subscriptions:ShutdownSpread must be between 0 and 10 minutes.")
        : options.SlowReaderYield <= TimeSpan.Zero || options.SlowReaderYield > TimeSpan.FromSeconds(10) ? ValidateOptionsResult.Fail("Registry:Subscriptions:SlowReaderYield must be more than 0 and at most 10 seconds.")
        : ValidateOptionsResult.Success;
}
