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

if (options.Probes > 0)
{
    await new ProbeBenchmark(options, Console.Out).RunAsync(stop.Token);
    return 0;
}

var result = await new Benchmark(options, Console.Out).RunAsync(stop.Token);
var (json, markdown) = options.ResultFiles;
await Report.WriteAsync(result, json, markdown, stop.Token);
Console.WriteLine();
Console.WriteLine(Report.Markdown(result));
if (json is null && markdown is null)
{
    // Nothing asked to be written: the figures go to stdout only (results/ holds the runs kept for the record).
    Console.WriteLine(Report.Json(result));
    Console.WriteLine("Results were not written to a file (give --out results.json and/or --markdown results.md).");
}
else
{
    Console.WriteLine($"Results: {string.Join(" and ", new[] { json, markdown }.OfType<string>().Select(Path.GetFullPath))}");
}

return 0;
