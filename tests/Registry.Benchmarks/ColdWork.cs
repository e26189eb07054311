using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace Registry.Benchmarks;

/// <summary>
/// A node's first seconds next to its warmed figures, on the same node: a fresh process, and as
/// soon as it is ready a fan-out to parked consumers, then registrations until it has served
/// for ten seconds (counted from ready, not from process start: on a starved machine start-up
/// alone has taken 40 s, and what is cold is the code, not the clock); then the usual warm-up and the same fan-out and the same length
/// of registrations again. The ratio is what a node that has just started (a deploy, a restart
/// after a crash) gives away to one that has run for a while — mostly the JIT's tiering.
/// </summary>
public sealed partial class Benchmark
{
    private const int ColdFanOutConsumers = 1_000;
    private static readonly TimeSpan ColdWindow = TimeSpan.FromSeconds(10);

    private async Task<ColdWorkResult> ColdWorkAsync(string serverDll, BenchDatabase database, string work, BenchmarkResult result, CancellationToken cancellationToken)
    {
        await _log.WriteLineAsync($"A node's first {ColdWindow.TotalSeconds:0} s: fan-out to {ColdFanOutConsumers}, registrations at concurrency {_options.Concurrency}, then the same warmed…");
        await using var node = ServerNode.Start("node-first-seconds", serverDll, database.ConnectionString, work, _options.NodeEnvironment);
        using var http = new RegistryHttp(node.Url);
        await node.WaitForAsync(http.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
        var ready = Stopwatch.GetElapsedTime(node.StartTimestamp);

        var scratch = new BenchmarkResult { StartedAt = result.StartedAt, Machine = result.Machine, Settings = result.Settings };
        var serving = Stopwatch.GetTimestamp();
        var coldFanOut = await FanOutOnOwnPoolAsync(node, ColdFanOutConsumers, scratch, "-first", cancellationToken);
        // At least two seconds of registrations even when the fan-out took most of the window.
        var window = ColdWindow - Stopwatch.GetElapsedTime(serving);
        window = window < TimeSpan.FromSeconds(2) ? TimeSpan.FromSeconds(2) : window;
        var cold = await RegistrationsForAsync(http, node, "first", window, cancellationToken);

        await WarmUpAsync(http, http, cancellationToken);
        var warmFanOut = await FanOutOnOwnPoolAsync(node, ColdFanOutConsumers, scratch, "-warm", cancellationToken);
        var warm = await RegistrationsForAsync(http, node, "warm", window, cancellationToken);
        await _log.WriteLineAsync(string.Create(
            CultureInfo.InvariantCulture,
            $"  ready at {ready.TotalSeconds:0.00} s; first seconds: fan-out p99 {coldFanOut.DelayMs.P99} ms, {cold.PerSecond}/s; warm: fan-out p99 {warmFanOut.DelayMs.P99} ms, {warm.PerSecond}/s"));
        return new ColdWorkResult(Math.Round(ready.TotalSeconds, 3), ColdWindow.TotalSeconds, coldFanOut, warmFanOut, cold, warm, _options.NodeEnvironment);
    }

    private async Task<FanOutResult> FanOutOnOwnPoolAsync(ServerNode node, int consumers, BenchmarkResult scratch, string label, CancellationToken cancellationToken)
    {
        using var polls = new RegistryHttp(node.Url);
        return await FanOutAsync(polls, node, null, consumers, scratch, false, cancellationToken, label);
    }

    /// <summary>New registrations, as many as <see cref="BenchmarkOptions.Concurrency"/> clients send in <paramref name="duration"/>.</summary>
    private async Task<RegistrationResult> RegistrationsForAsync(RegistryHttp http, ServerNode node, string prefix, TimeSpan duration, CancellationToken cancellationToken)
    {
        // More than can be sent in the time: each one a new instance.
        var requests = Enumerable.Range(0, 400_000)
            .Select(i => http.Post("/v1/register?ttl=3600", Encoding.UTF8.GetBytes(RegistryHttp.Provider($"{BenchDatabase.Prefix}{prefix}-{i % 100}", Addr(i))), i))
            .ToArray();
        var cpu = CpuSeconds(node, null, null);
        var (latencies, errors, seconds) = await SendForAsync(http.BaseAddress, requests, _options.Concurrency, duration, cancellationToken);
        return new RegistrationResult(
            latencies.Length, errors, _options.Concurrency, Math.Round(seconds, 3), Math.Round(latencies.Length / seconds, 1),
            Distribution.Of(latencies), Empty(seconds), CpuSince(node, null, null, cpu));
    }
}
