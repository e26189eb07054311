using Microsoft.Extensions.Configuration;
using Registry.Access;

namespace Registry.Tests.Access;

/// <summary>The mode rule: Required unless configured, or the embedded-database start reachable only from this machine.</summary>
public sealed class AccessModeTests
{
    [Theory]
    [InlineData(null, true)] // Kestrel's default, http://localhost:5000
    [InlineData("http://localhost:5080", true)]
    [InlineData("http://127.0.0.1:5080;http://[::1]:5080", true)]
    [InlineData("http://0.0.0.0:5080", false)]
    [InlineData("http://*:5080", false)]
    [InlineData("http://+:5080", false)]
    [InlineData("http://localhost:5080;http://10.0.0.5:5080", false)]
    [InlineData("http://registry.example.com:5080", false)]
    public void OnlyLoopbackAddressesCountAsLoopbackOnly(string? urls, bool loopbackOnly)
    {
        var configuration = Configuration(new() { ["urls"] = urls });

        Assert.Equal(loopbackOnly, AccessServiceExtensions.ListensOnlyOnLoopback(configuration));
    }

    [Fact]
    public void KestrelEndpointsReplaceUrlsAndPortsAloneBindEverything()
    {
        Assert.False(AccessServiceExtensions.ListensOnlyOnLoopback(Configuration(new()
        {
            ["urls"] = "http://localhost:5080",
            ["Kestrel:Endpoints:Https:Url"] = "https://0.0.0.0:5443",
        })));
        Assert.True(AccessServiceExtensions.ListensOnlyOnLoopback(Configuration(new()
        {
            ["urls"] = "http://0.0.0.0:5080",
            ["Kestrel:Endpoints:Https:Url"] = "https://127.0.0.1:5443",
        })));
        Assert.False(AccessServiceExtensions.ListensOnlyOnLoopback(Configuration(new() { ["http_ports"] = "8080" })));
    }

    [Theory]
    [InlineData(null, true, "http://localhost:5080", AccessMode.Open, true)]
    [InlineData(null, false, "http://localhost:5080", AccessMode.Required, false)]
    [InlineData(null, true, "http://0.0.0.0:5080", AccessMode.Required, false)]
    [InlineData("Required", true, "http://localhost:5080", AccessMode.Required, false)]
    [InlineData("open", false, "http://0.0.0.0:5080", AccessMode.Open, false)]
    [InlineData("Open", true, "http://localhost:5080", AccessMode.Open, false)]
    public void TheModeIsRequiredUnlessConfiguredOrAnEmbeddedLoopbackStart(string? mode, bool embedded, string urls, AccessMode expected, bool forThisMachineOnly)
    {
        var state = AccessServiceExtensions.DecideMode(Configuration(new() { ["Registry:Auth:Mode"] = mode, ["urls"] = urls }), embedded);

        Assert.Equal(expected, state.Mode);
        Assert.Equal(forThisMachineOnly, state.ForThisMachineOnly);
    }

    [Fact]
    public void AnUnknownModeStopsTheNodeNamingTheSetting()
    {
        var e = Assert.Throws<AccessConfigurationException>(() => AccessServiceExtensions.DecideMode(Configuration(new() { ["Registry:Auth:Mode"] = "Closed" }), embeddedDatabase: false));

        Assert.Contains("Registry:Auth:Mode", e.Message, StringComparison.Ordinal);
    }

    private static IConfiguration Configuration(Dictionary<string, string?> values) => new ConfigurationBuilder().AddInMemoryCollection(values).Build();
}
