using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using Registry.FaultTests.Infrastructure;

namespace Registry.FaultTests;

/// <summary>A subscription entry: provider, optional protocol, optional <c>zone</c> meta.</summary>
public sealed record Interest(string Provider, string? Protocol, string? Zone)
{
    public bool Matches(Endpoint endpoint) =>
        endpoint.Application == Provider
        && (Protocol is null || Protocol == endpoint.Protocol)
        && (Zone is null || endpoint.Meta.Contains($"zone={Zone},", StringComparison.Ordinal) || endpoint.Meta.EndsWith($"zone={Zone}}}", StringComparison.Ordinal));

    public override string ToString() => $"{Provider}{(Protocol is null ? "" : "/" + Protocol)}{(Zone is null ? "" : "[zone=" + Zone + "]")}";
}

/// <summary>The registry's HTTP API as the suite's clients use it; every call is recorded in the history.</summary>
public sealed class RegistryApi(HttpClient http, History history, IReadOnlyList<NodeProcess> nodes)
{
    private static readonly TimeSpan WriteTimeout = TimeSpan.FromSeconds(10);

    public int NodeCount => nodes.Count;

    public Task<Op> RegisterAsync(string client, int node, string application, string addr, string zone, int ttl, CancellationToken cancellationToken)
    {
        var op = history.Begin(client, OpKind.Register, node, application, addr, $"{client}.{Guid.NewGuid().ToString("N")[..8]}", ttl);
        return SendLeaseAsync(op, $"/v1/register?ttl={ttl}", Provider(application, addr, new JsonObject { ["zone"] = zone, ["w"] = op.Write }), cancellationToken);
    }

    public Task<Op> HeartbeatAsync(string client, int node, string application, string addr, CancellationToken cancellationToken) =>
        SendLeaseAsync(history.Begin(client, OpKind.Heartbeat, node, application, addr), "/v1/heartbeat", Provider(application, addr, null), cancellationToken);

    public Task<Op> UnregisterAsync(string client, int node, string application, string addr, CancellationToken cancellationToken) =>
        SendLeaseAsync(history.Begin(client, OpKind.Unregister, node, application, addr), "/v1/unregister", Provider(application, addr, null), cancellationToken);

    /// <summary>A long poll; the answer when there was one (200), else null.</summary>
    public async Task<(Op Op, ConsumerAnswer? Answer)> SubscribeAsync(
        string client, int node, IReadOnlyList<Interest> interests, string? version, int wait, CancellationToken cancellationToken)
    {
        var op = history.Begin(client, OpKind.Poll, node, string.Join("+", interests), write: version);
        var body = new JsonObject
        {
            ["subscribes"] = new JsonArray(interests.Select(i =>
            {
                var entry = new JsonObject { ["provider"] = i.Provider };
                if (i.Protocol is not null)
                {
                    entry["protocol"] = i.Protocol;
                }

                if (i.Zone is not null)
                {
                    entry["meta"] = new JsonObject { ["zone"] = i.Zone };
                }

                return (JsonNode)entry;
            }).ToArray()),
        };
        var query = version is null ? "" : $"?version={Uri.EscapeDataString(version)}&wait={wait}";
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(wait + 15));
        try
        {
            using var response = await http.PostAsJsonAsync(new Uri(nodes[node].Url, "/v1/subscribe" + query), body, timeout.Token);
            if (response.StatusCode != HttpStatusCode.OK)
            {
                history.End(op, (int)response.StatusCode);
                return (op, null);
            }

            var (answerVersion, endpoints) = ReadAnswer(await response.Content.ReadFromJsonAsync<JsonElement>(timeout.Token));
            history.End(op, 200, error: $"version {answerVersion}, {endpoints.Count} endpoints");
            return (op, new ConsumerAnswer(op.Completed, answerVersion, endpoints));
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or JsonException && !cancellationToken.IsCancellationRequested)
        {
            history.End(op, 0, error: e.GetType().Name);
            return (op, null);
        }
    }

    /// <summary>What a node serves for one application now (not recorded: the checker's read).</summary>
    public async Task<(string Version, IReadOnlyList<Endpoint> Endpoints)?> ServedAsync(int node, string application, CancellationToken cancellationToken)
    {
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(5));
            using var response = await http.GetAsync(new Uri(nodes[node].Url, $"/v1/services/{application}"), timeout.Token);
            return response.StatusCode == HttpStatusCode.OK
                ? ReadAnswer(await response.Content.ReadFromJsonAsync<JsonElement>(timeout.Token))
                : null;
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return null;
        }
    }

    private static (string Version, IReadOnlyList<Endpoint> Endpoints) ReadAnswer(JsonElement answer) =>
        (answer.GetProperty("version").GetString()!,
         answer.GetProperty("endpoints").EnumerateArray()
             .Select(e => new Endpoint(
                 e.GetProperty("application").GetString()!, e.GetProperty("protocol").GetString()!, e.GetProperty("addr").GetString()!,
                 RegistryTables.CanonicalMeta(e.TryGetProperty("meta", out var meta) ? meta : default)))
             .ToList());

    private static JsonObject Provider(string application, string addr, JsonObject? meta)
    {
        var provider = new JsonObject { ["application"] = application, ["protocol"] = "http", ["addr"] = addr };
        if (meta is not null)
        {
            provider["meta"] = meta;
        }

        return provider;
    }

    private async Task<Op> SendLeaseAsync(Op op, string path, JsonObject body, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(WriteTimeout);
        try
        {
            using var response = await http.PostAsJsonAsync(new Uri(nodes[op.Node].Url, path), body, timeout.Token);
            DateTimeOffset? expires = null;
            if (response.StatusCode is HttpStatusCode.OK or HttpStatusCode.Created && op.Kind != OpKind.Unregister)
            {
                var lease = await response.Content.ReadFromJsonAsync<JsonElement>(timeout.Token);
                expires = DateTimeOffset.Parse(lease.GetProperty("expires").GetString()!, CultureInfo.InvariantCulture);
            }

            history.End(op, (int)response.StatusCode, expires);
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException or JsonException && !cancellationToken.IsCancellationRequested)
        {
            history.End(op, 0, error: e.GetType().Name);
        }

        return op;
    }
}
