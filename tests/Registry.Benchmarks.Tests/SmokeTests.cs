using System.Text.Json;
using Registry.Tests.Infrastructure;

namespace Registry.Benchmarks.Tests;

/// <summary>
/// Runs the benchmark's smoke mode in-process (two child nodes, a private PostgreSQL, tiny
/// loads): the tool itself must keep working, whatever the figures on this machine are.
/// </summary>
public sealed class SmokeTests
{
    [Fact]
    public async Task SmokeRunAnswersEveryParkedConsumerAndWritesItsResults()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-bench-test-{Guid.NewGuid():N}"[..36]);
        // One size twice: the second fan-out must change what its consumers hold too.
        var options = BenchmarkOptions.SmokeDefaults with { WorkDirectory = Path.Combine(folder, "work"), FanOutConsumers = [20, 20] };
        // Where the suite is given a PostgreSQL server (CI's service container), use a database
        // of our own there; otherwise the tool starts its private cluster.
        await using var database = Environment.GetEnvironmentVariable(TestDatabase.EnvironmentVariable) is null
            ? null
            : await TestDatabase.StartAsync();
        if (database is not null)
        {
            options = options with { ConnectionString = database.ConnectionString };
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        try
        {
            var result = await new Benchmark(options, TextWriter.Null).RunAsync(timeout.Token);
            await Report.WriteAsync(result, Path.Combine(folder, "latest.json"), Path.Combine(folder, "latest.md"), timeout.Token);

            Assert.Equal(2, result.FanOut.Count);
            foreach (var fanOut in result.FanOut)
            {
                Assert.Equal(options.FanOutConsumers[0], fanOut.Answered);
                Assert.Equal(0, fanOut.Missed);
                Assert.InRange(fanOut.DelayMs.Max, 0.01, 20_000);
            }

            Assert.Equal(options.Registrations, result.Registration!.Count);
            Assert.Equal(0, result.Registration.Errors);
            Assert.True(result.Registration.PerSecond > 0);
            // The target's figure is one node's; the other run is taken while node B follows.
            Assert.Null(result.Registration.Cpu.OtherNodeSeconds);
            Assert.Equal(0, result.RegistrationFollowed!.Errors);
            Assert.NotNull(result.RegistrationFollowed.Cpu.OtherNodeSeconds);
            Assert.Equal(0, result.Heartbeats!.Errors);
            Assert.True(result.Heartbeats.Sent > 0);
            Assert.Equal(0, result.CrossNode!.Missed);
            Assert.Equal(options.CrossNodeRounds * options.CrossNodeConsumers, result.CrossNode.Samples);
            Assert.True(result.Idle!.RssParkedBytes > 0);
            if (database is null)
            {
                // Counted through pg_stat_statements, which only the private cluster preloads.
                Assert.NotNull(result.Idle.Parked.Statements);
            }

            Assert.True(result.ColdStart!.SecondsToServeAll > 0);
            var overlap = result.Overlap!;
            Assert.Equal(options.OverlapSubscriptions, overlap.Answered);
            Assert.Equal(0, overlap.Missed);
            Assert.True(overlap.RssFirstParkedBytes > 0 && overlap.RssAllParkedBytes > 0);
            Assert.True(overlap.AnswerBytes > options.OverlapInstances * 400L);
            Assert.True(overlap.ChangeAcknowledgedMs > 0);

            using var json = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(folder, "latest.json")));
            Assert.Equal(options.FanOutConsumers[0], json.RootElement.GetProperty("fanOut")[0].GetProperty("answered").GetInt32());
            Assert.Equal(options.OverlapSubscriptions, json.RootElement.GetProperty("overlap").GetProperty("answered").GetInt32());
            Assert.Contains("| Figure | Target | Measured | Met |", await File.ReadAllTextAsync(Path.Combine(folder, "latest.md")), StringComparison.Ordinal);
        }
        finally
        {
            DeleteQuietly(folder);
        }
    }

    [Fact]
    public async Task AuthComparisonRunsTheSameLoadWithAndWithoutAccessControl()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-bench-test-{Guid.NewGuid():N}"[..36]);
        var options = BenchmarkOptions.Parse(["--smoke", "--only", "auth", "--auth-tokens", "4"]) with { WorkDirectory = Path.Combine(folder, "work") };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        try
        {
            var result = await new Benchmark(options, TextWriter.Null).RunAsync(timeout.Token);

            var auth = result.Auth!;
            Assert.Equal(4, auth.Tokens);
            Assert.Equal(["off", "on"], auth.RoundsRun.Select(r => r.Mode).Order());
            Assert.All(auth.RoundsRun, round =>
            {
                // Every request was accepted: with access control on, only because it carried a token.
                Assert.Equal(0, round.Registration.Errors);
                Assert.Equal(0, round.Heartbeats.Errors);
                Assert.True(round.Heartbeats.Sent > 0);
                Assert.All(round.FanOut, f => Assert.Equal(0, f.Missed));
            });
            Assert.Equal(2 + options.FanOutConsumers.Count, auth.Figures.Count);
            Assert.All(auth.Figures, f => Assert.True(f.Off > 0 && f.On > 0 && f.Cost > 0));
            Assert.Null(result.Registration);
            Assert.Null(result.Overlap);
        }
        finally
        {
            DeleteQuietly(folder);
        }
    }

    [Fact]
    public async Task SessionsScenarioOpensEverySessionAndWakesSubscribersOfEachResetOne()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-bench-test-{Guid.NewGuid():N}"[..36]);
        var options = BenchmarkOptions.Parse(["--smoke", "--only", "sessions"]) with { WorkDirectory = Path.Combine(folder, "work") };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        try
        {
            var result = await new Benchmark(options, TextWriter.Null).RunAsync(timeout.Token);

            var sessions = result.Sessions!;
            Assert.Equal(options.SessionCount, sessions.Sessions);
            Assert.True(sessions.RssOpenBytes > 0);
            Assert.Equal(options.SessionKills, sessions.Kills);
            // Every reset woke every parked subscriber with an answer of a new version.
            Assert.Equal(0, sessions.Missed);
            Assert.Equal(options.SessionKills, sessions.WokenMs.Count);
            Assert.InRange(sessions.WokenMs.Max, 0.01, 10_000);
            Assert.Equal(2, result.Targets.Count(t => t.Figure.StartsWith("Sessions:", StringComparison.Ordinal)));
            Assert.Null(result.Registration);
        }
        finally
        {
            DeleteQuietly(folder);
        }
    }

    [Fact]
    public async Task WithoutAnEtcdBinaryThePeerIsSkippedWithOneLine()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-bench-test-{Guid.NewGuid():N}"[..36]);
        var options = BenchmarkOptions.Parse(["--smoke", "--only", "etcd", "--etcd-binary", Path.Combine(folder, "no-etcd")]) with { WorkDirectory = Path.Combine(folder, "work") };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var log = new StringWriter();
        try
        {
            var result = await new Benchmark(options, log).RunAsync(timeout.Token);

            Assert.Null(result.Etcd);
            Assert.Contains(result.Notes, n => n.StartsWith("etcd: not measured", StringComparison.Ordinal));
            Assert.Single(log.ToString().Split('\n'), line => line.StartsWith("etcd: not measured", StringComparison.Ordinal));
        }
        finally
        {
            DeleteQuietly(folder);
        }
    }

    [Fact]
    public async Task FirstSecondsAreMeasuredNextToTheSameNodeWarmed()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-bench-test-{Guid.NewGuid():N}"[..36]);
        var options = BenchmarkOptions.Parse(["--smoke", "--only", "first-seconds"]) with { WorkDirectory = Path.Combine(folder, "work") };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(150));
        try
        {
            var first = (await new Benchmark(options, TextWriter.Null).RunAsync(timeout.Token)).ColdWork!;

            Assert.True(first.SecondsToReady > 0);
            foreach (var fanOut in new[] { first.FirstFanOut, first.WarmFanOut })
            {
                Assert.Equal(fanOut.Consumers, fanOut.Answered);
            }

            foreach (var registrations in new[] { first.FirstRegistrations, first.WarmRegistrations })
            {
                Assert.True(registrations.Count > 0 && registrations.PerSecond > 0);
                Assert.Equal(0, registrations.Errors);
            }
        }
        finally
        {
            DeleteQuietly(folder);
        }
    }

    [Fact]
    public async Task ProbeScenarioCountsEveryInstanceProbedOncePerInterval()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-bench-test-{Guid.NewGuid():N}"[..36]);
        Directory.CreateDirectory(folder);
        var markdown = Path.Combine(folder, "probes.md");
        var options = BenchmarkOptions.Parse(["--smoke", "--only", "probes", "--probes", "40", "--probe-interval", "1", "--probe-window-seconds", "3", "--markdown", markdown])
            with { WorkDirectory = Path.Combine(folder, "work") };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        try
        {
            var result = await new ProbeBenchmark(options, TextWriter.Null).RunAsync(timeout.Token);

            Assert.Equal(0, result.RegisterErrors);
            Assert.Equal(0, result.InstancesNotProbed);
            // Three one-second intervals of 40 instances, give or take the window's edges.
            Assert.InRange(result.Probes, 80, 160);
            Assert.True(result.LatenessMs.Count > 0);
            Assert.True(result.NodeCpuPercent > 0);
            Assert.Contains("| probes/s received by the target |", await File.ReadAllTextAsync(markdown), StringComparison.Ordinal);
        }
        finally
        {
            DeleteQuietly(folder);
        }
    }

    /// <summary>Where etcd is installed (Debian's etcd-server), the peer runs with the same generator; CI has none and checks the skip above.</summary>
    [Fact]
    public async Task EtcdPeerAnswersEveryWatcherThroughBothApisWhereInstalled()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"registry-bench-test-{Guid.NewGuid():N}"[..36]);
        var options = BenchmarkOptions.Parse(["--smoke", "--only", "etcd"]) with { WorkDirectory = Path.Combine(folder, "work") };
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        try
        {
            var result = await new Benchmark(options, TextWriter.Null).RunAsync(timeout.Token);

            if (Benchmark.EtcdBinary(null) is null)
            {
                Assert.Null(result.Etcd);
                return;
            }

            var etcd = result.Etcd!;
            Assert.StartsWith("3.", etcd.Version, StringComparison.Ordinal);
            Assert.Equal(0, etcd.RegistrationV2.Errors);
            Assert.Equal(0, etcd.RegistrationV3.Errors);
            Assert.True(etcd.HeartbeatsV2.Sent > 0 && etcd.HeartbeatsV2.Errors == 0);
            Assert.True(etcd.HeartbeatsV3.Sent > 0 && etcd.HeartbeatsV3.Errors == 0);
            Assert.Equal(["v2", "v3"], etcd.FanOut.Select(f => f.Api).Order());
            Assert.All(etcd.FanOut, f => Assert.Equal(options.FanOutConsumers[0], f.FanOut.Answered));
        }
        finally
        {
            DeleteQuietly(folder);
        }
    }

    private static void DeleteQuietly(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
            // Left for the system's temporary-folder cleanup.
        }
        catch (UnauthorizedAccessException)
        {
            // The cluster's files belong to the postgres user when run as root.
        }
    }
}
