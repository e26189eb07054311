using Microsoft.Extensions.Options;

namespace Registry.ChangeFeed;

/// <summary>The LISTEN connection and the in-memory registry (section <c>Registry:ChangeFeed</c>).</summary>
public sealed class ChangeFeedOptions
{
    /// <summary>After this long without a notification the listener proves its connection with a query.</summary>
    public TimeSpan IdleCheckInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a liveness query or a readiness round trip may take.</summary>
    public TimeSpan CheckTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Longest pause between reconnection attempts (backoff grows up to it).</summary>
    public TimeSpan MaxReconnectDelay { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often a node compares per-application counts and revisions with the database, to catch a lost notification.</summary>
    public TimeSpan ConsistencyCheckInterval { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary>The intervals of <see cref="ChangeFeedOptions"/>, which data annotations cannot bound.</summary>
internal sealed class ChangeFeedOptionsValidator : IValidateOptions<ChangeFeedOptions>
{
    public ValidateOptionsResult Validate(string? name, ChangeFeedOptions options) =>
        options.IdleCheckInterval > TimeSpan.Zero && options.CheckTimeout > TimeSpan.Zero && options.MaxReconnectDelay > TimeSpan.Zero && options.ConsistencyCheckInterval > TimeSpan.Zero
            ? ValidateOptionsResult.Success
            : ValidateOptionsResult.Fail("Registry:ChangeFeed intervals must be positive.");
}
