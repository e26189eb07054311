using System.Text;
using Microsoft.Extensions.Options;
using Registry.Model;

namespace Registry.Tests;

/// <summary>
/// Binding request documents (unit level, no server): the serializer's refusals come back as
/// the API's field names and reasons, including bodies that are JSON but not Unicode text.
/// </summary>
public sealed class RequestReaderTests
{
    private const string Head = "{\"application\":\"app\",\"protocol\":\"http\",\"addr\":\"10.0.0.1:80\"";
    private readonly RequestReader _reader = new(Options.Create(new LimitsOptions()));

    public static TheoryData<string, string, string> BadProviders => new()
    {
        { "", "$", "the request body is empty" },
        { "{", "$", "is not valid JSON (line 1, byte" },
        { """{"extra":1,""", "$", "is not valid JSON" },
        { Head + ""","meta":{"k":}}""", "meta.k", "is not valid JSON" },
        { "null", "$", "must not be null; expected a JSON object" },
        { "[]", "$", "must be a JSON object, not an array" },
        { """{"protocol":"http","addr":"10.0.0.1:80"}""", "application", "is required" },
        { """{"application":null,"protocol":"http","addr":"10.0.0.1:80"}""", "application", "must not be null; expected a string" },
        { """{"application":42,"protocol":"http","addr":"10.0.0.1:80"}""", "application", "must be a string, not a number" },
        { """{"application":"app\ud800","protocol":"http","addr":"10.0.0.1:80"}""", "application", "is not valid Unicode text" },
        { """{"\ud800":1}""", "$", "member name that is not valid UTF-8 or Unicode text" },
        { Head + ""","meta":{"\udc00":"v"}}""", "meta", "member name that is not valid UTF-8 or Unicode text" },
        { Head + ""","meta":null}""", "meta", "must not be null; expected an object of string values" },
        { Head + ""","meta":[]}""", "meta", "must be an object of string values, not an array" },
        { Head + ""","meta":{"k":1}}""", "meta.k", "must be a string, not a number" },
        { Head + ""","meta":{"k":null}}""", "meta.k", "must not be null; expected a string" },
        { Head + ""","meta":{"a b":"1","a b":"2"}}""", "meta.a b", "appears more than once" },
        { Head + ""","extra":true}""", "extra", "is not a field here; the fields are application, protocol, addr, meta" },
        { """{"application":"a","application":"b","protocol":"http","addr":"10.0.0.1:80"}""", "application", "appears more than once" },
        { """{"application":"-a","protocol":"http","addr":"10.0.0.1:80"}""", "application", "must start with a letter or digit" },
    };

    [Theory]
    [MemberData(nameof(BadProviders))]
    public void ABadProviderDocumentNamesTheFieldAndTheReason(string body, string field, string reason)
    {
        var errors = new Errors();

        var provider = _reader.ReadProvider(Encoding.UTF8.GetBytes(body), errors);

        Assert.Null(provider);
        AssertProblem(errors, field, reason);
    }

    public static TheoryData<string, string, string> BadSubscriptions => new()
    {
        { "{}", "subscribes", "is required" },
        { """{"subscribes":{}}""", "subscribes", "must be an array, not an object" },
        { """{"subscribes":[]}""", "subscribes", "must hold at least one entry" },
        { """{"subscribes":[1]}""", "subscribes[0]", "must be a JSON object, not a number" },
        { """{"subscribes":[null]}""", "subscribes[0]", "must not be null; expected a JSON object" },
        { """{"subscribes":[{"provider":"a"},{}]}""", "subscribes[1].provider", "is required" },
        { """{"subscribes":[{"provider":"a","protocol":null}]}""", "subscribes[0].protocol", "must not be null; expected a string" },
        { """{"subscribes":[{"provider":"a","meta":{"k":{}}}]}""", "subscribes[0].meta.k", "must be a string, not an object" },
        { """{"subscribes":[{"provider":"a","extra":1}]}""", "subscribes[0].extra", "is not a field here; the fields are provider, protocol, meta" },
    };

    [Theory]
    [MemberData(nameof(BadSubscriptions))]
    public void ABadSubscriptionDocumentNamesTheFieldAndTheReason(string body, string field, string reason)
    {
        var errors = new Errors();

        var entries = _reader.ReadSubscription(Encoding.UTF8.GetBytes(body), errors);

        Assert.Null(entries);
        AssertProblem(errors, field, reason);
    }

    public static TheoryData<byte[], string> NotUtf8 => new()
    {
        { [.. "{\"subscribes\":[{\"provider\":\"a\",\"meta\":{\""u8, 0xff, .. "\":\"x\"}}]}"u8], "subscribes[0].meta" },
        { [.. "{\"subscribes\":[{\"provider\":\"a\",\"meta\":{\"k\":\""u8, 0xff, .. "\"}}]}"u8], "subscribes[0].meta.k" },
        { [.. "{\""u8, 0xc3, .. "\":1}"u8], "$" },
        { [.. "{\"subscribes\":[{\"provider\":\"a\",\"meta\":{\"k\":\"v\",\""u8, 0xff, .. "\":\"x\"}}]}"u8], "subscribes[0].meta" },
    };

    [Theory]
    [MemberData(nameof(NotUtf8))]
    public void BytesThatAreNotUtf8AreABadRequestNamingWhereTheyAre(byte[] body, string field)
    {
        var errors = new Errors();

        var entries = _reader.ReadSubscription(body, errors);

        Assert.Null(entries);
        AssertProblem(errors, field, "not valid");
    }

    [Fact]
    public void AGoodProviderDocumentIsBoundWithItsMetaInCanonicalOrder()
    {
        var errors = new Errors();

        var provider = _reader.ReadProvider(Encoding.UTF8.GetBytes(Head + ""","meta":{"tag":"read","idc":"shanghai"}}"""), errors);

        Assert.False(errors.Any);
        Assert.Equal(new InstanceKey("app", "http", "10.0.0.1:80"), provider!.Key);
        Assert.Equal(["idc", "tag"], provider.Meta.ToArray().Select(p => p.Key));
    }

    [Fact]
    public void OmittedOptionalFieldsMeanAnyProtocolAndNoMeta()
    {
        var errors = new Errors();

        var entries = _reader.ReadSubscription("""{"subscribes":[{"provider":"a"}]}"""u8.ToArray(), errors);
        var provider = _reader.ReadProvider("""{"application":"app","protocol":"http","addr":"10.0.0.1:80"}"""u8.ToArray(), errors);

        Assert.False(errors.Any);
        Assert.Equal(new SubscriptionEntry("a", null, Meta.Empty), Assert.Single(entries!));
        Assert.Same(Meta.Empty, provider!.Meta);
    }

    internal static void AssertProblem(Errors errors, string field, string reason)
    {
        var byField = errors.ToDictionary();
        Assert.True(byField.TryGetValue(field, out var reasons), $"no error for '{field}' in {string.Join("; ", byField.Select(p => $"{p.Key}: {string.Join(" | ", p.Value)}"))}");
        Assert.Contains(reasons, r => r.Contains(reason, StringComparison.Ordinal));
    }
}
