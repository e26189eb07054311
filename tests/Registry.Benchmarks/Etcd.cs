using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;

namespace Registry.Benchmarks;

/// <summary>
/// etcd as a peer, the registry people compare with: Debian's <c>etcd-server</c> (3.4) started on
/// loopback in a folder of its own and driven by the same generator as the registry — the lean
/// connections for writes, <c>HttpClient</c> with one connection per watcher for fan-out. Both of
/// its HTTP APIs are measured: v2 (<c>PUT …?ttl=</c>, <c>refresh=true</c>, <c>?wait=true</c>) and v3
/// through its gRPC gateway (a put with a lease, lease keep-alive, <c>/v3/watch</c> streams).
/// </summary>
public sealed partial class Benchmark
{
    private async Task<EtcdResult?> EtcdAsync(string work, BenchmarkResult result, CancellationToken cancellationToken)
    {
        if (EtcdBinary(_options.EtcdPath) is not { } binary)
        {
            const string Missing = "etcd: not measured — no etcd binary (install Debian's etcd-server, or pass --etcd-binary PATH).";
            await _log.WriteLineAsync(Missing);
            result.Notes.Add(Missing);
            return null;
        }

        var clientPort = ServerNode.FreePort();
        var peerPort = ServerNode.FreePort();
        var url = new Uri($"http://127.0.0.1:{clientPort}");
        var peer = $"http://127.0.0.1:{peerPort}";
        var start = new ProcessStartInfo(binary) { WorkingDirectory = work };
        foreach (var argument in new[]
        {
            "--name", "bench", "--data-dir", Path.Combine(work, "etcd"),
            "--listen-client-urls", url.ToString().TrimEnd('/'), "--advertise-client-urls", url.ToString().TrimEnd('/'),
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", $"bench={peer}",
            "--enable-v2=true", "--log-level", "warn",
        })
        {
            start.ArgumentList.Add(argument);
        }

        await using var etcd = ServerNode.Launch("etcd", url, start, work);
        using var http = new RegistryHttp(url);
        await etcd.WaitForAsync(http.Client, "/health", TimeSpan.FromSeconds(60), cancellationToken);
        using var versionAnswer = await http.Client.GetAsync(new Uri("/version", UriKind.Relative), cancellationToken);
        using var versionDocument = JsonDocument.Parse(await versionAnswer.Content.ReadAsStringAsync(cancellationToken));
        var version = versionDocument.RootElement.GetProperty("etcdserver").GetString() ?? "?";
        await _log.WriteLineAsync($"etcd {version} on {url} ({binary}): warming up, then registrations, heartbeats and fan-out through v2 and v3…");

        // The same warm-up as the registry's nodes: writes and renewals for the warm-up time.
        await SendForAsync(url, Enumerable.Range(0, 10_000).Select(i => V2Put(url, $"{BenchDatabase.Prefix}warm-{i % 100}", Addr(i), 3600)).ToArray(), _options.Concurrency, _options.WarmUp, cancellationToken);

        var leases = await GrantLeasesAsync(http, _options.Concurrency, 3600, cancellationToken);
        var v2 = new List<RegistrationResult>();
        var v3 = new List<RegistrationResult>();
        for (var round = 1; round <= _options.RegistrationRounds; round++)
        {
            var r = round;
            v2.Add(await EtcdRegistrationAsync(http, etcd, i => V2Put(url, $"{BenchDatabase.Prefix}reg{r}-{i % 100}", Addr(i), 3600, Provider(r, i)), cancellationToken));
            v3.Add(await EtcdRegistrationAsync(http, etcd, i => V3Put(url, $"{BenchDatabase.Prefix}reg{r}-{i % 100}/{Addr(i)}", Provider(r, i), leases[i % leases.Length]), cancellationToken));
            await _log.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  registrations round {round}: v2 {v2[^1].PerSecond}/s, v3 {v3[^1].PerSecond}/s"));
        }

        string Provider(int round, int i) => RegistryHttp.Provider($"{BenchDatabase.Prefix}reg{round}-{i % 100}", Addr(i), new Dictionary<string, string> { ["zone"] = $"z{i % 3}" });

        var instances = _options.HeartbeatInstances;
        var ttl = _options.HeartbeatTtlSeconds;
        var (_, v2Failed, _) = await RegisterManyAsync(http, Enumerable.Range(0, instances).Select(i => V2Put(url, $"{BenchDatabase.Prefix}hb-{i % 100}", Addr(i), ttl)).ToArray(), _options.Concurrency, cancellationToken);
        var v2Heartbeats = await EtcdHeartbeatsAsync(url, etcd, instances, Enumerable.Range(0, instances).Select(i => V2Refresh(url, $"{BenchDatabase.Prefix}hb-{i % 100}", Addr(i), ttl)).ToArray(), cancellationToken);
        var heartbeatLeases = await GrantLeasesAsync(http, instances, ttl, cancellationToken);
        var v3Heartbeats = await EtcdHeartbeatsAsync(url, etcd, instances, heartbeatLeases.Select(id => V3KeepAlive(url, id)).ToArray(), cancellationToken);
        if (v2Failed > 0)
        {
            throw new InvalidOperationException($"{v2Failed} of etcd's heartbeating keys could not be written.");
        }

        await _log.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  heartbeats: v2 refresh {v2Heartbeats.PerSecond}/s, v3 keep-alive {v3Heartbeats.PerSecond}/s"));

        var fanOuts = new List<EtcdFanOut>();
        foreach (var consumers in _options.FanOutConsumers.Order())
        {
            foreach (var api in new[] { "v2", "v3" })
            {
                var fanOut = await EtcdFanOutAsync(etcd, api, consumers, cancellationToken);
                fanOuts.Add(fanOut);
                await _log.WriteLineAsync(string.Create(
                    CultureInfo.InvariantCulture,
                    $"  fan-out {api} to {consumers}: p50 {fanOut.FanOut.DelayMs.P50} ms, p99 {fanOut.FanOut.DelayMs.P99} ms, missed {fanOut.FanOut.Missed}; {fanOut.BytesPerWatcher / 1024:0.0} KiB per watcher"));
            }
        }

        return new EtcdResult(version, Median(v2, r => r.PerSecond), Median(v3, r => r.PerSecond), v2, v3, v2Heartbeats, v3Heartbeats, fanOuts);
    }

    /// <summary>The etcd binary: the one given, else Debian's /usr/bin/etcd, else one on PATH; null when there is none.</summary>
    internal static string? EtcdBinary(string? configured)
    {
        if (!string.IsNullOrEmpty(configured))
        {
            return File.Exists(configured) ? Path.GetFullPath(configured) : null;
        }

        var path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries);
        return path.Prepend("/usr/bin").Select(folder => Path.Combine(folder, "etcd")).FirstOrDefault(File.Exists);
    }

    private static string V2Path(string application, string addr) => $"/v2/keys/{application}/{Uri.EscapeDataString(addr)}";

    private static byte[] V2Put(Uri etcd, string application, string addr, int ttl, string? value = null) =>
        LeanConnection.Request(
            "PUT", etcd, $"{V2Path(application, addr)}?ttl={ttl}", "application/x-www-form-urlencoded",
            Encoding.ASCII.GetBytes("value=" + Uri.EscapeDataString(value ?? RegistryHttp.Provider(application, addr))));

    /// <summary>A TTL refresh: the v2 way to renew a key without rewriting it (watchers are not told).</summary>
    private static byte[] V2Refresh(Uri etcd, string application, string addr, int ttl) =>
        LeanConnection.Request("PUT", etcd, $"{V2Path(application, addr)}?ttl={ttl}&refresh=true&prevExist=true", "application/x-www-form-urlencoded", []);

    private static byte[] V3Put(Uri etcd, string key, string value, long lease) =>
        LeanConnection.Post(etcd, "/v3/kv/put", Encoding.UTF8.GetBytes(string.Create(
            CultureInfo.InvariantCulture,
            $"{{\"key\":\"{Base64(key)}\",\"value\":\"{Base64(value)}\",\"lease\":\"{lease}\"}}")));

    private static byte[] V3KeepAlive(Uri etcd, long lease) =>
        LeanConnection.Post(etcd, "/v3/lease/keepalive", Encoding.ASCII.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{{\"ID\":\"{lease}\"}}")));

    private static string Base64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    /// <summary>Leases of <paramref name="ttl"/> seconds, granted before anything is timed (as a client library grants its session's lease once).</summary>
    private static async Task<long[]> GrantLeasesAsync(RegistryHttp http, int count, int ttl, CancellationToken cancellationToken)
    {
        var leases = new long[count];
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, 16).Select(async _ =>
        {
            for (var i = Interlocked.Increment(ref next); i < count; i = Interlocked.Increment(ref next))
            {
                using var content = new StringContent(string.Create(CultureInfo.InvariantCulture, $"{{\"TTL\":{ttl}}}"), Encoding.UTF8, "application/json");
                using var response = await http.Client.PostAsync(new Uri("/v3/lease/grant", UriKind.Relative), content, cancellationToken);
                using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken));
                leases[i] = long.Parse(document.RootElement.GetProperty("ID").GetString()!, CultureInfo.InvariantCulture);
            }
        }));
        return leases;
    }

    private async Task<RegistrationResult> EtcdRegistrationAsync(RegistryHttp http, ServerNode etcd, Func<int, byte[]> request, CancellationToken cancellationToken)
    {
        var requests = Enumerable.Range(0, _options.Registrations).Select(request).ToArray();
        var cpu = CpuSeconds(etcd, null, null);
        var (latencies, errors, seconds) = await RegisterManyAsync(http, requests, _options.Concurrency, cancellationToken);
        return new RegistrationResult(
            _options.Registrations, errors, _options.Concurrency, Math.Round(seconds, 3), Math.Round(_options.Registrations / seconds, 1),
            Distribution.Of(latencies), Empty(seconds), CpuSince(etcd, null, null, cpu));
    }

    private async Task<HeartbeatResult> EtcdHeartbeatsAsync(Uri url, ServerNode etcd, int instances, byte[][] requests, CancellationToken cancellationToken)
    {
        var cpu = CpuSeconds(etcd, null, null);
        var (latencies, errors, seconds) = await SendForAsync(url, requests, _options.Concurrency, _options.HeartbeatDuration, cancellationToken);
        return new HeartbeatResult(
            instances, latencies.Length, errors, _options.Concurrency, Math.Round(seconds, 3), Math.Round(latencies.Length / seconds, 1),
            Distribution.Of(latencies), Empty(seconds), CpuSince(etcd, null, null, cpu));
    }

    /// <summary>
    /// The registry's fan-out, done the etcd way: <paramref name="consumers"/> watchers on one key
    /// (each on its own connection), one write, and each watcher's delay from sending the write
    /// to receiving its event; etcd's resident set before and with the watchers parked.
    /// </summary>
    private static async Task<EtcdFanOut> EtcdFanOutAsync(ServerNode etcd, string api, int consumers, CancellationToken cancellationToken)
    {
        // A pool of its own, closed afterwards, so the watchers' connections do not pile up.
        using var http = new RegistryHttp(etcd.Url);
        var key = $"{BenchDatabase.Prefix}fanout-{api}-{consumers}";
        var waitIndex = api == "v2"
            ? await V2WriteAsync(http, key, "first", cancellationToken) + 1
            : await V3WriteAsync(http, key, "first", cancellationToken);
        var rssBefore = etcd.Sample();
        using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var (watches, secondsToPark) = await ParkAsync(consumers, (_, parked) => api == "v2"
            ? V2WatchAsync(http, key, waitIndex, parked, giveUp.Token)
            : V3WatchAsync(http, key, parked, giveUp.Token), cancellationToken);
        var rssParked = etcd.Sample();
        var fanOut = await TimeChangeAsync(etcd, watches, giveUp, secondsToPark,
            async () => _ = api == "v2" ? await V2WriteAsync(http, key, "second", cancellationToken) : await V3WriteAsync(http, key, "second", cancellationToken),
            answeredAt => answeredAt, cancellationToken);
        var before = rssBefore?.RssBytes ?? 0;
        var parked = rssParked?.RssBytes ?? 0;
        return new EtcdFanOut(api, fanOut, before, parked, Math.Round((parked - before) / (double)consumers, 1));
    }

    /// <summary>Writes the key through v2; returns its modifiedIndex.</summary>
    private static async Task<long> V2WriteAsync(RegistryHttp http, string key, string value, CancellationToken cancellationToken)
    {
        using var content = new FormUrlEncodedContent([new KeyValuePair<string, string>("value", value)]);
        using var response = await http.Client.PutAsync(new Uri($"/v2/keys/{key}", UriKind.Relative), content, cancellationToken);
        response.EnsureSuccessStatusCode();
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken));
        return document.RootElement.GetProperty("node").GetProperty("modifiedIndex").GetInt64();
    }

    /// <summary>Writes the key through v3; returns the revision (watchers start after it).</summary>
    private static async Task<long> V3WriteAsync(RegistryHttp http, string key, string value, CancellationToken cancellationToken)
    {
        using var content = new StringContent($"{{\"key\":\"{Base64(key)}\",\"value\":\"{Base64(value)}\"}}", Encoding.UTF8, "application/json");
        using var response = await http.Client.PostAsync(new Uri("/v3/kv/put", UriKind.Relative), content, cancellationToken);
        response.EnsureSuccessStatusCode();
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken));
        return long.Parse(document.RootElement.GetProperty("header").GetProperty("revision").GetString()!, CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// One v2 long poll (<c>?wait=true&amp;waitIndex=</c>). etcd sends the headers once the watcher is
    /// set up (that is when it counts as parked) and the body when the event comes; returns when
    /// the body has arrived, or null when it was not the change.
    /// </summary>
    private static async Task<long?> V2WatchAsync(RegistryHttp http, string key, long waitIndex, Action parked, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(string.Create(CultureInfo.InvariantCulture, $"/v2/keys/{key}?wait=true&waitIndex={waitIndex}"), UriKind.Relative));
        using var response = await http.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        parked();
        var body = await response.Content.ReadAsStringAsync(cancellationToken);
        var answeredAt = Stopwatch.GetTimestamp();
        return response.StatusCode == HttpStatusCode.OK && body.Contains("\"second\"", StringComparison.Ordinal) ? answeredAt : null;
    }

    /// <summary>
    /// One v3 watch stream through the gateway: parked once its "created" message has come, done
    /// at the first message carrying events (null when that was not the change).
    /// </summary>
    private static async Task<long?> V3WatchAsync(RegistryHttp http, string key, Action parked, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri("/v3/watch", UriKind.Relative))
        {
            Content = new StringContent($"{{\"create_request\":{{\"key\":\"{Base64(key)}\"}}}}", Encoding.UTF8, "application/json"),
        };
        using var response = await http.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        response.EnsureSuccessStatusCode();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken));
        var created = await reader.ReadLineAsync(cancellationToken);
        if (created is null || !created.Contains("\"created\":true", StringComparison.Ordinal))
        {
            throw new InvalidDataException($"The watch was not created: {created}");
        }

        parked();
        while (await reader.ReadLineAsync(cancellationToken) is { } message)
        {
            if (message.Contains("\"events\"", StringComparison.Ordinal))
            {
                var answeredAt = Stopwatch.GetTimestamp();
                return message.Contains(Base64("second"), StringComparison.Ordinal) ? answeredAt : null;
            }
        }

        return null;
    }
}
