namespace Registry.Benchmarks.Tests;

public sealed class OptionsAndStatisticsTests
{
    [Fact]
    public void FlagsAfterSmokeOverrideItsDefaults()
    {
        var options = BenchmarkOptions.Parse(["--smoke", "--fanout", "5,7", "--concurrency", "3", "--no-pgbench"]);

        Assert.True(options.Smoke);
        Assert.Equal([5, 7], options.FanOutConsumers);
        Assert.Equal(3, options.Concurrency);
        Assert.False(options.PgBench);
    }

    [Fact]
    public void ResultsAreWrittenOnlyWhereAsked()
    {
        // A run without --out used to replace the committed results/latest.*.
        Assert.Equal((null, null), BenchmarkOptions.Parse([]).ResultFiles);
        Assert.Equal((null, null), BenchmarkOptions.Parse(["--smoke"]).ResultFiles);
        Assert.Equal(("run.json", "run.md"), BenchmarkOptions.Parse(["--out", "run.json"]).ResultFiles);
        Assert.Equal((null, "table.md"), BenchmarkOptions.Parse(["--markdown", "table.md"]).ResultFiles);
    }

    [Fact]
    public void TheProbeScenarioIsOffUntilAskedFor()
    {
        Assert.Equal(0, BenchmarkOptions.Parse([]).Probes);
        Assert.Equal(10_000, BenchmarkOptions.Parse(["--only", "probes"]).Probes);
        var options = BenchmarkOptions.Parse(["--only", "probes", "--probes", "50", "--probe-interval", "2"]);
        Assert.Equal(50, options.Probes);
        Assert.Equal(2, options.ProbeIntervalSeconds);
        Assert.False(options.MainPhases);
    }

    [Fact]
    public void AnUnknownFlagIsRejected() =>
        Assert.Throws<ArgumentException>(() => BenchmarkOptions.Parse(["--fast"]));

    [Fact]
    public void PercentilesAreNearestRank()
    {
        var distribution = Distribution.Of(Enumerable.Range(1, 100).Select(i => (double)i).ToArray());

        Assert.Equal(50, distribution.P50);
        Assert.Equal(99, distribution.P99);
        Assert.Equal(100, distribution.Max);
    }

    [Fact]
    public void TheHistogramCountsEveryValueOnce()
    {
        var text = Histogram.Render([1, 2, 12, 40, 41, 400]);

        var counted = text.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Sum(line => int.Parse(line.Split('│')[1].Trim('█', ' ').Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(6, counted);
    }
}
