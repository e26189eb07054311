using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;

namespace Registry.Tests.Infrastructure;

/// <summary>Small helpers for talking JSON to the service.</summary>
public static class Http
{
    public static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    public static Task<HttpResponseMessage> PostJsonAsync(this HttpClient client, string path, string json, CancellationToken cancellationToken = default) =>
        client.PostAsync(path, Json(json), cancellationToken);

    public static async Task<JsonNode> ReadJsonAsync(this HttpResponseMessage response) =>
        JsonNode.Parse(await response.Content.ReadAsStringAsync())!;

    public static string Provider(string application, string addr, string meta = "{}", string protocol = "http") =>
        $$"""{"application":"{{application}}","protocol":"{{protocol}}","addr":"{{addr}}","meta":{{meta}}}""";

    public static string Subscription(params string[] entries) => $$"""{"subscribes":[{{string.Join(",", entries)}}]}""";

    public static string Entry(string provider, string? protocol = null, string? meta = null) =>
        "{" + $"\"provider\":\"{provider}\""
            + (protocol is null ? "" : $",\"protocol\":\"{protocol}\"")
            + (meta is null ? "" : $",\"meta\":{meta}") + "}";

    /// <summary>Subscribes and returns (status, version, body).</summary>
    public static async Task<(int Status, string? Version, JsonNode? Body)> SubscribeAsync(
        this HttpClient client, string subscription, string? version = null, int? wait = null, CancellationToken cancellationToken = default)
    {
        var query = new List<string>();
        if (version is not null)
        {
            query.Add($"version={Uri.EscapeDataString(version)}");
        }

        if (wait is not null)
        {
            query.Add($"wait={wait}");
        }

        var path = "/v1/subscribe" + (query.Count > 0 ? "?" + string.Join("&", query) : "");
        using var response = await client.PostAsync(path, Json(subscription), cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        var body = text.Length > 0 ? JsonNode.Parse(text) : null;
        return ((int)response.StatusCode, body?["version"]?.GetValue<string>(), body);
    }

    public static EntityTagHeaderValue Tag(string version) => new($"\"{version}\"");
}
