using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;

namespace Registry.Benchmarks;

/// <summary>
/// Confirmed drain (<c>--drain-only</c>): consumers parked on two nodes, half on each, all holding
/// one instance; the instance is unregistered with <c>?drain=60</c>. Measures the time from the
/// unregister to the drain's answer next to the fan-out of the same change (every consumer's
/// time from the unregister to its answer), whose p99 the drain should stay within 1.5× of.
/// </summary>
public sealed class DrainBenchmark(BenchmarkOptions options, TextWriter log)
{
    private const int PollWaitSeconds = 55;
    private const string Leaving = "10.255.1.1:8080";

    public async Task<string> RunAsync(CancellationToken cancellationToken)
    {
        var consumers = options.FanOutConsumers.Max();
        var work = options.WorkDirectory ?? Path.Combine(Path.GetTempPath(), $"registry-drain-bench-{Environment.ProcessId}");
        Directory.CreateDirectory(work);
        await using var database = await BenchDatabase.OpenAsync(options.ConnectionString, work, durable: !options.NoFsync, log, cancellationToken);
        var serverDll = ServerLocator.Find(options.ServerDll);
        // One client address opens every poll: the per-client limit must let them all park.
        var environment = new Dictionary<string, string>(options.NodeEnvironment, StringComparer.Ordinal)
        {
            ["Registry__Limits__MaxParkedPerClient"] = (consumers + 10).ToString(CultureInfo.InvariantCulture),
        };
        // One after the other: the first migrates the fresh database.
        await using var a = ServerNode.Start("drain-a", serverDll, database.ConnectionString, work, environment);
        using var httpA = new RegistryHttp(a.Url);
        await a.WaitForAsync(httpA.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
        await using var b = ServerNode.Start("drain-b", serverDll, database.ConnectionString, work, environment);
        using var httpB = new RegistryHttp(b.Url);
        await b.WaitForAsync(httpB.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);

        var rounds = new List<(double DrainMs, Distribution FanOut, string Body)>();
        try
        {
            // A small round first, so the paths are compiled before they are timed.
            await RoundAsync(httpA, httpB, 100, "warm", cancellationToken);
            for (var round = 1; round <= 3; round++)
            {
                var measured = await RoundAsync(httpA, httpB, consumers, $"r{round}", cancellationToken);
                await log.WriteLineAsync($"  round {round}: drain {measured.DrainMs} ms, fan-out p99 {measured.FanOut.P99} ms ({measured.Body})");
                rounds.Add(measured);
            }
        }
        finally
        {
            await database.DeleteBenchRowsAsync(cancellationToken);
        }

        var report = Markdown(consumers, rounds);
        var path = options.OutputMarkdown ?? Path.Combine("tests", "Registry.Benchmarks", "results", "drain-latest.md");
        await File.WriteAllTextAsync(path, report, cancellationToken);
        await log.WriteLineAsync(report);
        await log.WriteLineAsync($"Results: {Path.GetFullPath(path)}");
        return report;
    }

    private async Task<(double DrainMs, Distribution FanOut, string Body)> RoundAsync(
        RegistryHttp httpA, RegistryHttp httpB, int consumers, string name, CancellationToken cancellationToken)
    {
        var application = $"{BenchDatabase.Prefix}drain-{name}";
        await httpA.RegisterAsync(RegistryHttp.Provider(application, "10.255.1.2:8080"), 3600, cancellationToken);
        await httpA.RegisterAsync(RegistryHttp.Provider(application, Leaving), 3600, cancellationToken);
        var version = await CurrentAsync(httpA, application, cancellationToken);
        // Node B learns of the registrations through the change feed: wait until it answers the same.
        while (await CurrentAsync(httpB, application, cancellationToken) != version)
        {
            await Task.Delay(10, cancellationToken);
        }

        using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var sent = 0;
        var polls = new Task<RegistryHttp.PollAnswer>[consumers];
        const int Wave = 250;
        for (var i = 0; i < consumers; i++)
        {
            var http = i % 2 == 0 ? httpA : httpB;
            polls[i] = http.SubscribeAsync(application, version, PollWaitSeconds, () => Interlocked.Increment(ref sent), giveUp.Token);
            if ((i + 1) % Wave == 0)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(25), cancellationToken);
            }
        }

        var ramp = Stopwatch.StartNew();
        while (Volatile.Read(ref sent) < consumers && ramp.Elapsed < TimeSpan.FromSeconds(60))
        {
            await Task.Delay(20, cancellationToken);
        }

        // The last bodies are on the wire; give the nodes a moment to park them.
        await Task.Delay(TimeSpan.FromMilliseconds(Math.Clamp(consumers / 10, 200, 2000)), cancellationToken);

        var unregisterSent = Stopwatch.GetTimestamp();
        using var content = new StringContent(RegistryHttp.Provider(application, Leaving), Encoding.UTF8, "application/json");
        using var response = await httpA.Client.PostAsync(new Uri("/v1/unregister?drain=60", UriKind.Relative), content, cancellationToken);
        var body = await response.Content.ReadAsStringAsync(cancellationToken);
        var drainMs = Stopwatch.GetElapsedTime(unregisterSent).TotalMilliseconds;
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new InvalidOperationException($"The drain answered {(int)response.StatusCode}: {body}");
        }

        giveUp.CancelAfter(TimeSpan.FromSeconds(20));
        try
        {
            await Task.WhenAll(polls);
        }
        catch (Exception e) when (e is OperationCanceledException or HttpRequestException)
        {
            // Counted below: only the answers that came are in the distribution.
        }

        var delays = polls
            .Where(p => p.IsCompletedSuccessfully && p.Result.Status == HttpStatusCode.OK && p.Result.Version != version)
            .Select(p => Stopwatch.GetElapsedTime(unregisterSent, p.Result.AnsweredAt).TotalMilliseconds)
            .ToList();
        if (delays.Count != consumers)
        {
            await log.WriteLineAsync($"  {consumers - delays.Count} of {consumers} consumers had no changed answer");
        }

        return (Distribution.Round(drainMs), Distribution.Of(delays), body);
    }

    private static async Task<string> CurrentAsync(RegistryHttp http, string application, CancellationToken cancellationToken) =>
        (await http.SubscribeAsync(application, null, 0, null, cancellationToken)).Version
            ?? throw new InvalidOperationException("The subscribe answer carried no ETag.");

    private static string Markdown(int consumers, List<(double DrainMs, Distribution FanOut, string Body)> rounds)
    {
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"# Drain: {consumers} consumers parked over two nodes ({DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC)");
        text.AppendLine();
        text.AppendLine("| round | unregister → drain answer (ms) | fan-out p50 (ms) | fan-out p99 (ms) | fan-out max (ms) | drain / p99 | drain answer |");
        text.AppendLine("|---|---|---|---|---|---|---|");
        for (var i = 0; i < rounds.Count; i++)
        {
            var (drain, fanOut, body) = rounds[i];
            var ratio = fanOut.P99 > 0 ? (drain / fanOut.P99).ToString("0.00", CultureInfo.InvariantCulture) : "-";
            text.AppendLine(CultureInfo.InvariantCulture, $"| {i + 1} | {drain} | {fanOut.P50} | {fanOut.P99} | {fanOut.Max} | {ratio} | `{body}` |");
        }

        return text.ToString();
    }
}
