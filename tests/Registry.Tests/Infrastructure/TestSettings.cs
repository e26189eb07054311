namespace Registry.Tests.Infrastructure;

/// <summary>Node settings shared by every test suite that hosts the service.</summary>
public static class TestSettings
{
    /// <summary>Short intervals and no shutdown spread, so the suites stay fast.</summary>
    public static IReadOnlyDictionary<string, string?> Fast { get; } = new Dictionary<string, string?>
    {
        ["Registry:Leases:RenewalInterval"] = "00:00:00.100",
        ["Registry:Leases:SweepInterval"] = "00:00:00.200",
        ["Registry:Leases:LivenessInterval"] = "00:00:00.200",
        ["Registry:Membership:RefreshInterval"] = "00:00:00.200",
        // A watchers request returns once every live node answered; the wait only bounds a node
        // that never does, and two NOTIFY round trips can take over a second on a loaded machine.
        ["Registry:Drain:WatchersWait"] = "00:00:10",
        ["Registry:Leases:GraceGap"] = "00:00:02",
        ["Registry:Subscriptions:ShutdownSpread"] = "00:00:00",
        ["Registry:Sessions:KeepAliveSeconds"] = "1",
        ["Registry:ChangeFeed:IdleCheckInterval"] = "00:00:02",
        ["Registry:ChangeFeed:MaxReconnectDelay"] = "00:00:01",
        ["Logging:LogLevel:Default"] = "Warning",
        // Suites not about access run without credentials; AccessTests turn it on.
        ["Registry:Auth:Mode"] = "Open",
    };
}
