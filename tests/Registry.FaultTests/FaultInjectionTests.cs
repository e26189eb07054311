using System.Globalization;
using System.Text;
using Xunit.Abstractions;

// The failover test measures times; a fault run beside it on two shared cores would be measured too.
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Registry.FaultTests;

/// <summary>
/// Random traffic against three nodes while faults are injected, then a checker over the
/// recorded history (after etcd's robustness tests and Jepsen). Each run prints its seed;
/// <c>REGISTRY_FAULT_SEED=n</c> runs that seed again (the same clients, faults, targets and
/// durations; the interleaving is the machine's), <c>REGISTRY_FAULT_SEEDS=k</c> runs k seeds,
/// <c>REGISTRY_FAULT_SECONDS</c> sets each run's length of traffic under faults.
/// </summary>
public sealed class FaultInjectionTests(ITestOutputHelper output)
{
    [Fact]
    public async Task RandomTrafficUnderInjectedFaultsKeepsEveryPromise()
    {
        var runFor = TimeSpan.FromSeconds(Number("REGISTRY_FAULT_SECONDS") ?? 40);
        var failures = new StringBuilder();
        foreach (var seed in Seeds())
        {
            output.WriteLine($"seed {seed} (REGISTRY_FAULT_SEED={seed} runs it again)");
            var result = await new FaultRun(seed, runFor, output).ExecuteAsync(CancellationToken.None);
            if (result.Violations.Count > 0)
            {
                failures.AppendLine(CultureInfo.InvariantCulture,
                    $"Seed {seed} broke {result.Violations.Count} promise(s); REGISTRY_FAULT_SEED={seed} reproduces it; full history in {result.LogFolder}/history.txt");
                failures.AppendLine(result.Report);
            }
        }

        Assert.True(failures.Length == 0, failures.ToString());
    }

    private static List<int> Seeds()
    {
        if (Number("REGISTRY_FAULT_SEED") is { } seed)
        {
            return [seed];
        }

        return Enumerable.Range(0, Number("REGISTRY_FAULT_SEEDS") ?? 1).Select(_ => Random.Shared.Next(1, 1_000_000)).ToList();
    }

    private static int? Number(string variable) =>
        int.TryParse(Environment.GetEnvironmentVariable(variable), NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : null;
}
