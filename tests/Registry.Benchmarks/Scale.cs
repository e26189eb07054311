using System.Globalization;
using System.Net;

namespace Registry.Benchmarks;

/// <summary>
/// Tens of thousands of parked polls on one node: the generator connects from several loopback
/// addresses (one address runs out of ephemeral ports near 28,000) and raises its own and the
/// node's open-file limit where it may; then the idle cost (memory, CPU, database statements)
/// and one change's fan-out to all of them.
/// </summary>
public sealed partial class Benchmark
{
    private async Task<ScaleResult> ScaleAsync(string serverDll, BenchDatabase database, string work, BenchmarkResult result, CancellationToken cancellationToken)
    {
        // Room for the node's and the generator's other files and connections.
        const int Spare = 2_000;
        var asked = _options.ScaleConsumers;
        var wanted = (ulong)asked + Spare;
        var generatorLimit = FileLimit.Raise(0, wanted);
        await using var node = ServerNode.Start("node-scale", serverDll, database.ConnectionString, work, _options.NodeEnvironment);
        var nodeLimit = node.ProcessId is { } pid ? FileLimit.Raise(pid, wanted) : 0;
        var limit = Math.Min(generatorLimit, nodeLimit);
        var consumers = limit == 0 ? asked : (int)Math.Min((ulong)asked, limit > Spare ? limit - Spare : 0); // 0: not Linux, limit unknown
        if (consumers < asked)
        {
            // Without CAP_SYS_RESOURCE the hard limit (ulimit -Hn) cannot be raised: measure what fits, and say so.
            var note = string.Create(
                CultureInfo.InvariantCulture,
                $"Scale: {asked:N0} parked polls asked for, {consumers:N0} measured — the open-file limit could not be raised above {Math.Min(generatorLimit, nodeLimit)} (hard limit; raising it needs CAP_SYS_RESOURCE), and each poll is a socket on both sides.");
            result.Notes.Add(note);
            await _log.WriteLineAsync(note);
        }

        // 20,000 connections per source address, well inside the ephemeral range.
        var sources = Enumerable.Range(2, Math.Max(2, (consumers + 19_999) / 20_000)).Select(i => new IPAddress(new byte[] { 127, 0, 0, (byte)i })).ToArray();
        await _log.WriteLineAsync(string.Create(
            CultureInfo.InvariantCulture,
            $"{consumers:N0} parked polls on one node, from {sources.Length} source addresses (127.0.0.2…); open-file limits: generator {generatorLimit}, node {nodeLimit}…"));
        using var http = new RegistryHttp(node.Url);
        await node.WaitForAsync(http.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
        await WarmUpAsync(http, http, cancellationToken);
        var scratch = new BenchmarkResult { StartedAt = DateTimeOffset.UtcNow, Machine = MachineInfo.Read(database.Version), Settings = Settings(database) };
        await FanOutOnOwnPoolAsync(node, 50, scratch, "-scale-warm", cancellationToken);

        using var polls = new RegistryHttp(node.Url, sources: sources);
        var fanOut = await FanOutAsync(polls, node, database, consumers, scratch, measureIdle: true, cancellationToken, "-scale");
        await _log.WriteLineAsync(string.Create(
            CultureInfo.InvariantCulture,
            $"  p50 {fanOut.DelayMs.P50} ms, p99 {fanOut.DelayMs.P99} ms, missed {fanOut.Missed} (errors {fanOut.Errors}); {scratch.Idle!.BytesPerPoll / 1024:0.0} KiB per poll"));
        return new ScaleResult(asked, consumers, sources.Length, generatorLimit, nodeLimit, fanOut, scratch.Idle!);
    }
}
