using System.Text.Json.Nodes;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>Which instances a subscription answers with, and in which order.</summary>
public sealed class MatchingTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    private async Task<string[]> AddrsAsync(params string[] entries)
    {
        var (status, _, body) = await Client.SubscribeAsync(Http.Subscription(entries));
        Assert.Equal(200, status);
        return body!["endpoints"]!.AsArray().Select(e => $"{(string?)e!["application"]}/{(string?)e["protocol"]}/{(string?)e["addr"]}").ToArray();
    }

    private async Task RegisterAsync(string application, string addr, string meta = "{}", string protocol = "http")
    {
        using var response = await Client.PostJsonAsync("/v1/register", Http.Provider(application, addr, meta, protocol));
        response.EnsureSuccessStatusCode();
    }

    [Fact]
    public async Task ProtocolMustEqualAndAnAbsentProtocolMatchesAny()
    {
        await RegisterAsync("app", "10.0.0.1:80");
        await RegisterAsync("app", "10.0.0.1:81", protocol: "grpc");

        Assert.Equal(["app/http/10.0.0.1:80"], await AddrsAsync(Http.Entry("app", "http")));
        Assert.Equal(["app/grpc/10.0.0.1:81"], await AddrsAsync(Http.Entry("app", "grpc")));
        Assert.Empty(await AddrsAsync(Http.Entry("app", "https")));
        Assert.Equal(["app/grpc/10.0.0.1:81", "app/http/10.0.0.1:80"], await AddrsAsync(Http.Entry("app")));
    }

    [Fact]
    public async Task MetaIsASubsetMatchAndEmptyOrAbsentMetaMatchesAll()
    {
        await RegisterAsync("app", "10.0.0.1:80", """{"cluster":"small","idc":"sh","tag":"read"}""");
        await RegisterAsync("app", "10.0.0.2:80", """{"cluster":"small","idc":"bj"}""");
        await RegisterAsync("app", "10.0.0.3:80");

        Assert.Equal(["app/http/10.0.0.1:80", "app/http/10.0.0.2:80"], await AddrsAsync(Http.Entry("app", meta: """{"cluster":"small"}""")));
        Assert.Equal(["app/http/10.0.0.1:80"], await AddrsAsync(Http.Entry("app", meta: """{"cluster":"small","tag":"read"}""")));
        Assert.Empty(await AddrsAsync(Http.Entry("app", meta: """{"cluster":"Small"}""")));
        Assert.Empty(await AddrsAsync(Http.Entry("app", meta: """{"zone":"a"}""")));
        Assert.Equal(3, (await AddrsAsync(Http.Entry("app", meta: "{}"))).Length);
        Assert.Equal(3, (await AddrsAsync(Http.Entry("app"))).Length);
    }

    [Fact]
    public async Task SeveralProvidersAreUnitedAndEachInstanceAppearsOnce()
    {
        await RegisterAsync("one", "10.0.0.1:80", """{"a":"1","b":"2"}""");
        await RegisterAsync("two", "10.0.0.2:80");
        await RegisterAsync("three", "10.0.0.3:80");

        var addrs = await AddrsAsync(
            Http.Entry("two"),
            Http.Entry("one", meta: """{"a":"1"}"""),
            Http.Entry("one", meta: """{"b":"2"}"""),
            Http.Entry("one", "http"));

        Assert.Equal(["one/http/10.0.0.1:80", "two/http/10.0.0.2:80"], addrs);
    }

    [Fact]
    public async Task OrderIsByteWiseByApplicationProtocolAndAddr()
    {
        await RegisterAsync("b", "10.0.0.9:80");
        await RegisterAsync("a", "9.0.0.1:80");
        await RegisterAsync("a", "10.0.0.1:80");
        await RegisterAsync("a", "10.0.0.1:8", protocol: "z");
        await RegisterAsync("B", "10.0.0.1:80");
        await RegisterAsync("a", "Host-B:80");
        await RegisterAsync("a", "host-a:80");

        var addrs = await AddrsAsync(Http.Entry("b"), Http.Entry("a"), Http.Entry("B"));

        Assert.Equal(
            ["B/http/10.0.0.1:80", "a/http/10.0.0.1:80", "a/http/9.0.0.1:80", "a/http/Host-B:80", "a/http/host-a:80", "a/z/10.0.0.1:8", "b/http/10.0.0.9:80"],
            addrs);
    }

    [Fact]
    public async Task NamesAreCaseSensitive()
    {
        await RegisterAsync("App", "10.0.0.1:80");

        Assert.Empty(await AddrsAsync(Http.Entry("app")));
        Assert.Single(await AddrsAsync(Http.Entry("App")));
    }

    [Fact]
    public async Task NonAsciiMetaRoundTripsAndMatches()
    {
        await RegisterAsync("app", "10.0.0.1:80", """{"idc":"上海","emoji":"🚀"}""");

        var (_, _, body) = await Client.SubscribeAsync(Http.Subscription(Http.Entry("app", meta: """{"idc":"上海"}""")));

        var endpoint = Assert.Single(body!["endpoints"]!.AsArray());
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"emoji":"🚀","idc":"上海"}"""), endpoint!["meta"]));
    }
}
