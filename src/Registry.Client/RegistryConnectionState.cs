namespace Registry.Client;

/// <summary>Where a lease's or a subscription's background loop stands.</summary>
public enum RegistryConnectionState
{
    /// <summary>The first attempt has not been answered yet.</summary>
    Starting,

    /// <summary>The last attempt succeeded.</summary>
    Connected,

    /// <summary>The last attempt failed in a way that retrying may change (no node answered, a timeout, <c>5xx</c>, <c>429</c>); retrying with backoff.</summary>
    Unavailable,

    /// <summary>
    /// The registry refused (<c>4xx</c>, e.g. invalid input or a credential it does not accept). A lease tries again
    /// about every <see cref="RegistryClientOptions.RetryMaxDelay"/>; a subscription ends.
    /// </summary>
    Refused,

    /// <summary>Disposed.</summary>
    Stopped,

    /// <summary>
    /// A session (<see cref="RegistrationMode.Session"/>) ended because another registration of the same instance took
    /// over: the lease stops trying (dispose it; register again to take the instance back).
    /// </summary>
    Replaced,
}
