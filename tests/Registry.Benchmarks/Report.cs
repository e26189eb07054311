using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Registry.Benchmarks;

/// <summary>Writes the results as JSON and as the Markdown the README's Performance section shows.</summary>
public static class Report
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public static string Json(BenchmarkResult result) => JsonSerializer.Serialize(result, JsonOptions);

    public static string Markdown(BenchmarkResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        var machine = result.Machine;
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"Measured {result.StartedAt:yyyy-MM-dd HH:mm} UTC on {machine.Cpu}, {machine.Cores} cores, {machine.MemoryBytes / 1073741824.0:0} GiB, {machine.Os}, {machine.Runtime}, PostgreSQL {machine.PostgreSql}");
        text.Append(CultureInfo.InvariantCulture, $"; database: {result.Settings.Database}, fsync {(result.Settings.Fsync ? "on" : "off")}; load generator on the same machine; load average {result.LoadAverageAtStart} at the start, {result.LoadAverageAtEnd} at the end; statements counted with {result.Settings.StatementSource}.\n\n");
        text.Append("| Figure | Target | Measured | Met |\n|---|---|---|---|\n");
        foreach (var target in result.Targets)
        {
            var met = target.Met switch { true => "✅ yes", false => "❌ no", null => "—" };
            var note = string.IsNullOrEmpty(target.Note) ? "" : $" — {target.Note}";
            text.Append(CultureInfo.InvariantCulture, $"| {target.Figure} | {target.Target} | {target.Measured}{note} | {met} |\n");
        }

        if (result.PgBenchUpsert is { } upsert || result.PgBenchUpdate is not null)
        {
            text.Append("\npgbench on the same database (custom scripts, `-M prepared`, the upsert at the registrations' client count is the median of its rounds, the others one run each):\n\n");
            foreach (var run in new[] { result.PgBenchUpsert }.Concat(result.PgBenchUpsertSweep).Append(result.PgBenchUpdate).OfType<PgBenchResult>())
            {
                text.Append(CultureInfo.InvariantCulture, $"- {run.Script}: {run.TransactionsPerSecond:N0} tps, {run.LatencyAverageMs} ms average, {run.Clients} clients, {run.Seconds:0} s")
                    .Append(run.DatabaseCpuSeconds is { } cpu ? string.Create(CultureInfo.InvariantCulture, $"; PostgreSQL used {cpu} CPU-s\n") : "\n");
            }
        }

        foreach (var fanOut in result.FanOut)
        {
            text.Append(CultureInfo.InvariantCulture, $"\nFan-out delay to {fanOut.Consumers:N0} parked consumers (from the change's request to each answer; first answer {fanOut.MinDelayMs} ms, the change itself acknowledged in {fanOut.ChangeAcknowledgedMs} ms; CPU from the change to the last answer: node {(fanOut.NodeCpuMs is { } nodeCpu ? nodeCpu.ToString(CultureInfo.InvariantCulture) + " ms" : "not measured")}, load generator {fanOut.GeneratorCpuMs} ms, of which {fanOut.GeneratorGcPauseMs} ms in its own GC pauses):\n\n```\n{fanOut.Histogram}```\n");
        }

        foreach (var peer in result.Etcd?.FanOut ?? [])
        {
            var fanOut = peer.FanOut;
            text.Append(CultureInfo.InvariantCulture, $"\netcd {result.Etcd!.Version} {peer.Api} fan-out to {fanOut.Consumers:N0} watchers (first event {fanOut.MinDelayMs} ms, the write acknowledged in {fanOut.ChangeAcknowledgedMs} ms; etcd CPU {fanOut.NodeCpuMs} ms, load generator {fanOut.GeneratorCpuMs} ms; RSS {peer.RssBeforeBytes / 1048576.0:0} → {peer.RssParkedBytes / 1048576.0:0} MiB parked):\n\n```\n{fanOut.Histogram}```\n");
        }

        foreach (var note in result.Notes)
        {
            text.Append(CultureInfo.InvariantCulture, $"\n- {note}");
        }

        return text.Append('\n').ToString();
    }

    public static async Task WriteAsync(BenchmarkResult result, string? jsonPath, string? markdownPath, CancellationToken cancellationToken)
    {
        if (jsonPath is not null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(jsonPath))!);
            await File.WriteAllTextAsync(jsonPath, Json(result) + "\n", cancellationToken);
        }

        if (markdownPath is not null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(markdownPath))!);
            await File.WriteAllTextAsync(markdownPath, Markdown(result), cancellationToken);
        }
    }
}
