using Registry.Benchmarks;

BenchmarkOptions options;
try
{
    options = BenchmarkOptions.Parse(args);
}
catch (ArgumentException e)
{
    await Console.Error.WriteLineAsync($"{e.Message}\n{BenchmarkOptions.Usage}");
    return 2;
}

// Ctrl+C stops the run and its child nodes cleanly.
using var stop = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    stop.Cancel();
};

if (options.DrainOnly)
{
    await new DrainBenchmark(options, Console.Out).RunAsync(stop.Token);
    return 0;
}

var result = await new Benchmark(options, Console.Out).RunAsync(stop.Token);
var folder = options.Smoke ? Path.Combine(Path.GetTempPath(), "registry-bench-smoke") : Path.Combine("tests", "Registry.Benchmarks", "results");
// The scenario alone does not replace a full run's results.
var json = options.OutputJson ?? Path.Combine(folder, options.OverlapOnly ? "overlap-latest.json" : "latest.json");
var markdown = options.OutputMarkdown ?? Path.ChangeExtension(json, ".md");
await Report.WriteAsync(result, json, markdown, stop.Token);
Console.WriteLine();
Console.WriteLine(Report.Markdown(result));
Console.WriteLine($"Results: {Path.GetFullPath(json)} and {Path.GetFullPath(markdown)}");
return 0;
