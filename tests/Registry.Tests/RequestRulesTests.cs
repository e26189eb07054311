using Registry.Model;
using static Registry.Tests.RequestReaderTests;

namespace Registry.Tests;

/// <summary>The registry's own input rules (API.md "Limits"), at unit level with the default limits.</summary>
public sealed class RequestRulesTests
{
    private readonly RequestRules _rules = new(new LimitsOptions());
    private readonly Errors _errors = new();

    [Theory]
    [InlineData("a")]
    [InlineData("a.b_c-D9")]
    [InlineData("0app")]
    public void AWellFormedNameIsAccepted(string name)
    {
        Assert.Equal(name, _rules.Name(name, "application", _errors));
        Assert.False(_errors.Any);
    }

    [Theory]
    [InlineData("", "must not be empty")]
    [InlineData("-app", "must start with a letter or digit")]
    [InlineData("a b", "hold only letters, digits")]
    [InlineData("appé", "hold only letters, digits")]
    [InlineData("a\u0001", "hold only letters, digits")]
    public void ABadNameIsRefusedWithTheReason(string name, string reason)
    {
        Assert.Null(_rules.Name(name, "subscribes[2].provider", _errors));
        AssertProblem(_errors, "subscribes[2].provider", reason);
    }

    [Fact]
    public void ANameIsAtMostTheConfiguredLength()
    {
        Assert.NotNull(_rules.Name(new string('a', 128), "application", _errors));
        Assert.Null(_rules.Name(new string('a', 129), "application", _errors));
        AssertProblem(_errors, "application", "is 129 characters long; at most 128 are allowed");
    }

    [Theory]
    [InlineData("http", null)]
    [InlineData("h2+tls.v-1", null)]
    [InlineData("HTTP", "must start with a lowercase letter")]
    [InlineData("1http", "must start with a lowercase letter")]
    [InlineData("", "must not be empty")]
    [InlineData("abcdefghijklmnopqrstuvwxyzabcdefg", "is 33 characters long; at most 32 are allowed")]
    public void AProtocolFollowsItsPattern(string protocol, string? reason)
    {
        var accepted = _rules.Protocol(protocol, "protocol", _errors);

        if (reason is null)
        {
            Assert.Equal(protocol, accepted);
            Assert.False(_errors.Any);
        }
        else
        {
            Assert.Null(accepted);
            AssertProblem(_errors, "protocol", reason);
        }
    }

    [Theory]
    [InlineData("10.0.0.1:80", null)]
    [InlineData("[::1]:8080", null)]
    [InlineData("my-host.example.com:443", null)]
    [InlineData("localhost:65535", null)]
    [InlineData("10.0.0.1", "must be host:port")]
    [InlineData(":80", "must be host:port")]
    [InlineData("10.0.0.1:", "must be host:port")]
    [InlineData("10.0.0.1:0", "the port must be a number from 1 to 65535")]
    [InlineData("10.0.0.1:00", "the port must be a number from 1 to 65535")]
    [InlineData("10.0.0.1:65536", "the port must be a number from 1 to 65535")]
    [InlineData("10.0.0.1:+80", "the port must be a number from 1 to 65535")]
    [InlineData("10.0.0.256:80", "must be host:port")]
    [InlineData("01.0.0.1:80", "must be host:port")]
    [InlineData("::1:80", "an IPv6 address must be in brackets")]
    [InlineData("[zz]:80", "the host in brackets must be an IPv6 address")]
    [InlineData("[fe80::1%eth0]:80", "the host in brackets must be an IPv6 address")]
    [InlineData("[[::1]:99]:8080", "the host in brackets must be an IPv6 address")]
    [InlineData("[[::1]]:8080", "the host in brackets must be an IPv6 address")]
    [InlineData("[::1]:080", "without leading zeros")]
    [InlineData("10.0.0.1:0080", "without leading zeros")]
    [InlineData("host name:80", "must be host:port")]
    [InlineData("-host:80", "must be host:port")]
    public void AnAddrIsHostColonPort(string addr, string? reason)
    {
        var problem = RequestRules.AddrProblem(addr);

        if (reason is null)
        {
            Assert.Null(problem);
        }
        else
        {
            Assert.Contains(reason, problem, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void MetaIsCanonicalAndOmittedMetaIsEmpty()
    {
        var meta = _rules.Meta(new Dictionary<string, string> { ["tag"] = "read", ["idc"] = "sh" }, "meta", _errors);

        Assert.Equal(["idc", "tag"], meta!.ToArray().Select(p => p.Key));
        Assert.Same(Meta.Empty, _rules.Meta(null, "meta", _errors));
        Assert.False(_errors.Any);
    }

    [Theory]
    [InlineData("", "v", "meta.", "meta keys must not be empty")]
    [InlineData("a b", "v", "meta.a b", "meta keys hold only letters, digits")]
    [InlineData("k", "a\u0001b", "meta.k", "the value must not contain control characters")]
    [InlineData("k", "a\u007fb", "meta.k", "the value must not contain control characters")]
    public void ABadMetaPairIsNamedByItsKey(string key, string value, string field, string reason)
    {
        Assert.Null(_rules.Meta(new Dictionary<string, string> { [key] = value }, "meta", _errors));
        AssertProblem(_errors, field, reason);
    }

    [Fact]
    public void AMetaValueNullIsRefused()
    {
        Assert.Null(_rules.Meta(new Dictionary<string, string> { ["k"] = null! }, "meta", _errors));
        AssertProblem(_errors, "meta.k", "must not be null; expected a string");
    }

    [Fact]
    public void MetaLengthsAreCountedInCodePoints()
    {
        var astral = string.Concat(Enumerable.Repeat("😀", 512)); // 1,024 UTF-16 units

        Assert.NotNull(_rules.Meta(new Dictionary<string, string> { ["k"] = astral }, "meta", _errors));
        Assert.False(_errors.Any);
        Assert.Null(_rules.Meta(new Dictionary<string, string> { ["k"] = astral + "x" }, "meta", _errors));
        AssertProblem(_errors, "meta.k", "the value is 513 characters long; at most 512 are allowed");
    }

    [Fact]
    public void AMetaKeyIsAtMostTheConfiguredLength()
    {
        Assert.NotNull(_rules.Meta(new Dictionary<string, string> { [new string('k', 128)] = "v" }, "meta", _errors));
        Assert.Null(_rules.Meta(new Dictionary<string, string> { [new string('k', 129)] = "v" }, "meta", _errors));
        AssertProblem(_errors, "meta." + new string('k', 129), "the key is 129 characters long; at most 128 are allowed");
    }

    [Fact]
    public void MetaHoldsAtMostTheConfiguredNumberOfPairs()
    {
        var pairs = Enumerable.Range(0, 65).ToDictionary(i => $"k{i}", _ => "v");

        Assert.Null(_rules.Meta(pairs, "subscribes[0].meta", _errors));
        AssertProblem(_errors, "subscribes[0].meta", "has 65 pairs; at most 64 are allowed");
        Assert.True(_rules.MetaCount(64, "meta", new Errors()));
    }

    [Fact]
    public void AQueryMetaPairFollowsTheSameRules()
    {
        Assert.True(_rules.MetaPair("idc", "shanghai", "meta.idc", _errors));
        Assert.False(_rules.MetaPair("", "x", "meta.", _errors));
        AssertProblem(_errors, "meta.", "meta keys must not be empty");
    }

    [Fact]
    public void AVersionIsBoundedAndHasNoControlCharacters()
    {
        Assert.Null(_rules.Version(null, _errors));
        Assert.Equal("23des4f", _rules.Version("23des4f", _errors));
        Assert.Equal(new string('v', 128), _rules.Version(new string('v', 128), _errors));
        Assert.False(_errors.Any);

        Assert.Null(_rules.Version(new string('v', 129), _errors));
        AssertProblem(_errors, "version", "is 129 characters long; at most 128 are allowed");
        var control = new Errors();
        Assert.Null(_rules.Version("v\n", control));
        AssertProblem(control, "version", "must not contain control characters");
    }

    [Fact]
    public void ASubscriptionHoldsOneToTheConfiguredNumberOfEntries()
    {
        static SubscriptionDocument Of(int count) => new()
        {
            Subscribes = Enumerable.Range(0, count).Select(i => new SubscribeEntryDocument { Provider = $"app{i}" }).ToList(),
        };

        Assert.Equal(64, _rules.Subscription(Of(64), _errors)!.Count);
        Assert.Null(_rules.Subscription(Of(65), _errors));
        AssertProblem(_errors, "subscribes", "holds 65 entries; at most 64 are allowed");
        var none = new Errors();
        Assert.Null(_rules.Subscription(Of(0), none));
        AssertProblem(none, "subscribes", "must hold at least one entry");
    }

    [Fact]
    public void EveryBrokenRuleOfADocumentIsReported()
    {
        var document = new ProviderDocument { Application = "-a", Protocol = "HTTP", Addr = "x", Meta = new Dictionary<string, string> { ["a b"] = "v" } };

        Assert.Null(_rules.Provider(document, _errors));
        Assert.Equal(["addr", "application", "meta.a b", "protocol"], _errors.ToDictionary().Keys.Order(StringComparer.Ordinal));
    }
}
