using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;

namespace Registry.Benchmarks;

/// <summary>
/// Runs every phase against one or two nodes and one database and collects the figures.
/// Phases run one after another so that they do not disturb each other's numbers; the
/// ceiling (pgbench) runs right after the registry figure it is compared with.
/// </summary>
public sealed partial class Benchmark
{
    private const string InitialAddr = "10.255.0.1:8080";
    private const int PollWaitSeconds = 55;

    private readonly BenchmarkOptions _options;
    private readonly TextWriter _log;

    /// <summary>Fan-outs run so far: each gets an application of its own, so a size given twice changes something the second time too.</summary>
    private int _fanOuts;

    public Benchmark(BenchmarkOptions options, TextWriter log)
    {
        _options = options;
        _log = log;
    }

    public async Task<BenchmarkResult> RunAsync(CancellationToken cancellationToken)
    {
        var ownsWork = _options.WorkDirectory is null;
        var work = _options.WorkDirectory ?? Path.Combine(Path.GetTempPath(), $"registry-bench-{Environment.ProcessId}-{DateTime.UtcNow:HHmmss}");
        Directory.CreateDirectory(work);
        await _log.WriteLineAsync($"Work folder: {work}");

        BenchDatabase? database = null;
        if (_options.Url is null || !string.IsNullOrWhiteSpace(_options.ConnectionString))
        {
            database = await BenchDatabase.OpenAsync(_options.ConnectionString, work, durable: !_options.NoFsync, _log, cancellationToken);
        }

        try
        {
            var result = new BenchmarkResult
            {
                StartedAt = DateTimeOffset.UtcNow,
                Machine = MachineInfo.Read(database?.Version),
                Settings = Settings(database),
                LoadAverageAtStart = LoadAverage(),
            };
            await RunPhasesAsync(result, database, work, cancellationToken);
            result.LoadAverageAtEnd = LoadAverage();
            Targets.Evaluate(result);
            if (database is not null)
            {
                await database.DisposeAsync();
                database = null;
            }

            // A failed run keeps its folder: the node logs and the cluster's log say why.
            if (ownsWork)
            {
                DeleteQuietly(work);
            }

            return result;
        }
        finally
        {
            if (database is not null)
            {
                await database.DisposeAsync();
            }
        }
    }

    private static string? LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : null;

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
            // Left for the system's temporary-folder cleanup.
        }
    }

    private RunSettings Settings(BenchDatabase? database) => new(
        _options.Smoke,
        _options.Url is null ? "two child nodes started by the tool" : $"running node {_options.Url}" + (_options.UrlB is null ? "" : $" and {_options.UrlB}"),
        database?.Description ?? "not reachable (no --connection-string): database figures skipped",
        _options.Concurrency,
        _options.WarmUp.TotalSeconds,
        _options.Registrations,
        _options.RegistrationRounds,
        _options.BurstConcurrency,
        _options.HeartbeatInstances,
        _options.HeartbeatTtlSeconds,
        _options.HeartbeatDuration.TotalSeconds,
        _options.FanOutConsumers,
        _options.IdleDuration.TotalSeconds,
        _options.CrossNodeRounds,
        _options.CrossNodeConsumers,
        _options.ColdStartInstances,
        _options.OverlapInstances,
        _options.OverlapSubscriptions,
        !_options.NoFsync,
        database is null ? "none" : database.StatementsAvailable ? "pg_stat_statements calls" : "pg_stat_database transactions",
        _options.NodeEnvironment);

    private async Task RunPhasesAsync(BenchmarkResult result, BenchDatabase? database, string work, CancellationToken cancellationToken)
    {
        var serverDll = _options.Url is null ? ServerLocator.Find(_options.ServerDll) : null;
        if (_options.MainPhases || _options.Overlap)
        {
            await OnTwoNodesAsync(result, database, work, serverDll, cancellationToken);
        }

        if (!_options.MainPhases)
        {
            result.Notes.Add("Only the scenarios named by --only were run.");
        }
        else if (serverDll is not null && database is not null)
        {
            await _log.WriteLineAsync($"Cold start with {_options.ColdStartInstances} instances…");
            result.ColdStart = await ColdStartAsync(serverDll, database, work, cancellationToken);
            await _log.WriteLineAsync($"  serving after {result.ColdStart.SecondsToServeAll} s, RSS {result.ColdStart.RssBytesServing / 1048576.0:0} MiB");
        }
        else
        {
            result.Notes.Add("Cold start needs the tool to start a node (not --url) and a database: skipped.");
        }

        if (_options.AuthComparison)
        {
            if (serverDll is not null && database is not null)
            {
                result.Auth = await AuthComparisonAsync(serverDll, database, work, result, cancellationToken);
                foreach (var name in AuthDatabases)
                {
                    await database.ExecuteAsync($"DROP DATABASE IF EXISTS {name} WITH (FORCE)", cancellationToken);
                }
            }
            else
            {
                result.Notes.Add("The auth comparison starts its own nodes and databases (not --url): skipped.");
            }
        }

        if (_options.ColdWork)
        {
            if (serverDll is not null && database is not null)
            {
                result.ColdWork = await ColdWorkAsync(serverDll, database, work, result, cancellationToken);
            }
            else
            {
                result.Notes.Add("A node's first seconds need the tool to start a node (not --url): skipped.");
            }
        }

        if (_options.Scale)
        {
            if (serverDll is not null && database is not null)
            {
                result.Scale = await ScaleAsync(serverDll, database, work, result, cancellationToken);
            }
            else
            {
                result.Notes.Add("The scale scenario starts its own node (not --url): skipped.");
            }
        }

        if (_options.Sessions)
        {
            if (serverDll is not null && database is not null)
            {
                result.Sessions = await SessionsAsync(serverDll, database, work, result, cancellationToken);
            }
            else
            {
                result.Notes.Add("The sessions scenario starts its own node (not --url): skipped.");
            }
        }

        if (_options.Etcd)
        {
            result.Etcd = await EtcdAsync(work, result, cancellationToken);
        }

        if (database is not null)
        {
            await database.DeleteBenchRowsAsync(cancellationToken);
        }
        else
        {
            result.Notes.Add($"Without a database connection the tool cannot delete its {BenchDatabase.Prefix}* instances: they leave when their leases run out (up to an hour).");
        }
    }

    /// <summary>The main phases and the overlap scenario, on two nodes (started here, or given by --url).</summary>
    private async Task OnTwoNodesAsync(BenchmarkResult result, BenchDatabase? database, string work, string? serverDll, CancellationToken cancellationToken)
    {
        ServerNode a, b;
        if (serverDll is not null)
        {
            await _log.WriteLineAsync($"Starting two nodes from {serverDll}");
            a = ServerNode.Start("node-a", serverDll, database!.ConnectionString, work, _options.NodeEnvironment);
            // B once A is ready: A migrates a new database, and two nodes migrating it at once
            // can fail one of them (node B exited with 1 in a suite run on a starved machine).
            using (var first = new RegistryHttp(a.Url))
            {
                try
                {
                    await a.WaitForAsync(first.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
                }
                catch
                {
                    await a.DisposeAsync();
                    throw;
                }
            }

            b = ServerNode.Start("node-b", serverDll, database.ConnectionString, work, _options.NodeEnvironment);
        }
        else
        {
            var url = _options.Url ?? throw new InvalidOperationException("Neither a server to start nor --url.");
            a = ServerNode.Existing("node-a", url, _options.ServerPid);
            b = ServerNode.Existing("node-b", _options.UrlB ?? url, null);
            if (_options.UrlB is null)
            {
                result.Notes.Add("Cross-node propagation measured on a single node (no --url-b): it is the same-node figure.");
            }
        }

        using var httpA = new RegistryHttp(a.Url);
        using var httpB = new RegistryHttp(b.Url);
        try
        {
            await a.WaitForAsync(httpA.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
            await b.WaitForAsync(httpB.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
            await _log.WriteLineAsync($"Nodes ready: {a.Url} and {b.Url}");

            await WarmUpAsync(httpA, httpB, cancellationToken);

            if (_options.MainPhases)
            {
                await MeasurePhasesAsync(result, database, work, a, b, httpA, httpB, cancellationToken);
            }
            else if (b.Owned)
            {
                await b.DisposeAsync();
            }

            if (_options.Overlap)
            {
                await _log.WriteLineAsync($"Overlapping subscriptions: {_options.OverlapSubscriptions} naming an application of {_options.OverlapInstances} instances…");
                result.Overlap = await OverlapAsync(httpA, a, cancellationToken);
                await _log.WriteLineAsync(
                    $"  RSS {result.Overlap.RssFirstParkedBytes / 1048576.0:0.0} → {result.Overlap.RssAllParkedBytes / 1048576.0:0.0} MiB; change {result.Overlap.ChangeNodeCpuMsAllAnswered} ms node CPU (one answer {result.Overlap.NodeCpuMsPerAnswer} ms)");
            }
        }
        finally
        {
            await a.DisposeAsync();
            await b.DisposeAsync();
        }
    }

    /// <summary>Every phase but the overlap and the cold start; stops node B (when the tool owns it) before the write-path figures.</summary>
    private async Task MeasurePhasesAsync(
        BenchmarkResult result, BenchDatabase? database, string work, ServerNode a, ServerNode b, RegistryHttp httpA, RegistryHttp httpB, CancellationToken cancellationToken)
    {
        // A small fan-out first, so the wake-up path is compiled before it is timed.
        await FanOutAsync(httpA, a, database, 50, new BenchmarkResult { StartedAt = result.StartedAt, Machine = result.Machine, Settings = result.Settings }, measureIdle: false, cancellationToken);

        var fanOuts = _options.FanOutConsumers.Order().ToArray();
        for (var i = 0; i < fanOuts.Length; i++)
        {
            var (consumers, measureIdle) = (fanOuts[i], i == fanOuts.Length - 1);
            await _log.WriteLineAsync($"Fan-out to {consumers} parked consumers{(measureIdle ? $", idle cost over {_options.IdleDuration.TotalSeconds:0} s" : "")}…");
            var fanOut = await FanOutAsync(httpA, a, database, consumers, result, measureIdle, cancellationToken);
            result.FanOut.Add(fanOut);
            await _log.WriteLineAsync($"  p50 {fanOut.DelayMs.P50} ms, p99 {fanOut.DelayMs.P99} ms, max {fanOut.DelayMs.Max} ms, missed {fanOut.Missed}");
        }

        await _log.WriteLineAsync("Cross-node propagation…");
        result.CrossNode = await CrossNodeAsync(httpA, httpB, cancellationToken);
        await _log.WriteLineAsync($"  p50 {result.CrossNode.DelayMs.P50} ms, p99 {result.CrossNode.DelayMs.P99} ms");

        var pgbenchBinary = _options.PgBench && database is not null ? PgBench.Find(_options.PgBenchPath) : null;
        var pgbench = pgbenchBinary is null ? null : new PgBench(pgbenchBinary, database!, work);
        if (_options.PgBench && pgbench is null)
        {
            result.Notes.Add("pgbench was not found (or no database): the ceiling was not measured.");
        }

        if (pgbench is not null)
        {
            await pgbench.PrepareAsync(_options.HeartbeatInstances, cancellationToken);
        }

        if (_options.Url is null || _options.UrlB is not null)
        {
            await _log.WriteLineAsync($"Registrations on A while B follows: {_options.Registrations} at concurrency {_options.Concurrency}…");
            result.RegistrationFollowed = await RegistrationAsync("followed", _options.Concurrency, httpA, database, a, b, cancellationToken);
            await _log.WriteLineAsync($"  {result.RegistrationFollowed.PerSecond}/s, p99 {result.RegistrationFollowed.LatencyMs.P99} ms");
        }

        // The write-path targets are for one node: a second node on this machine would take
        // the cores the first one is measured on (in production it runs elsewhere).
        var followers = b;
        if (b.Owned)
        {
            await b.DisposeAsync();
            followers = null;
        }
        else if (_options.UrlB is not null)
        {
            result.Notes.Add("Node B is not this tool's to stop: registrations and heartbeats were measured while it followed.");
        }

        // Rounds alternate with pgbench, so both see the machine's slow and fast spells alike.
        await _log.WriteLineAsync(
            $"Registrations on one node: {_options.RegistrationRounds} rounds of {_options.Registrations} at concurrency {_options.Concurrency}, pgbench, {_options.Registrations} at {_options.BurstConcurrency}…");
        for (var round = 1; round <= _options.RegistrationRounds; round++)
        {
            var registration = await RegistrationAsync($"reg{round}", _options.Concurrency, httpA, database, a, followers, cancellationToken);
            result.RegistrationRounds.Add(registration);
            await _log.WriteLineAsync($"  {registration.PerSecond}/s, p99 {registration.LatencyMs.P99} ms");
            if (pgbench is not null)
            {
                var upsert = await pgbench.UpsertAsync(_options.Concurrency, _options.PgBenchDuration, cancellationToken);
                result.PgBenchUpsertRounds.Add(upsert);
                await _log.WriteLineAsync($"  pgbench single-row upsert: {upsert.TransactionsPerSecond} tps");
            }

            var burst = await RegistrationAsync($"burst{round}", _options.BurstConcurrency, httpA, database, a, followers, cancellationToken);
            result.BurstRounds.Add(burst);
            await _log.WriteLineAsync($"  burst: {burst.PerSecond}/s, p99 {burst.LatencyMs.P99} ms");
        }

        result.Registration = Median(result.RegistrationRounds, r => r.PerSecond);
        result.Burst = Median(result.BurstRounds, r => r.PerSecond);
        result.PgBenchUpsert = result.PgBenchUpsertRounds.Count > 0 ? Median(result.PgBenchUpsertRounds, r => r.TransactionsPerSecond) : null;
        if (pgbench is not null)
        {
            foreach (var clients in new[] { 16, 32, _options.BurstConcurrency }.Where(c => c != _options.Concurrency).Distinct())
            {
                var upsert = await pgbench.UpsertAsync(clients, _options.PgBenchDuration, cancellationToken);
                result.PgBenchUpsertSweep.Add(upsert);
                await _log.WriteLineAsync($"  pgbench single-row upsert, {clients} clients: {upsert.TransactionsPerSecond} tps");
            }
        }

        await _log.WriteLineAsync($"Heartbeats: {_options.HeartbeatInstances} instances for {_options.HeartbeatDuration.TotalSeconds:0} s…");
        result.Heartbeats = await HeartbeatsAsync(httpA, database, a, followers, cancellationToken);
        await _log.WriteLineAsync($"  {result.Heartbeats.PerSecond}/s, database {result.Heartbeats.Database.StatementsPerSecond} statements/s");
        if (pgbench is not null)
        {
            result.PgBenchUpdate = await pgbench.UpdateAsync(_options.HeartbeatInstances, _options.Concurrency, _options.PgBenchDuration, cancellationToken);
            await _log.WriteLineAsync($"  pgbench single-row update: {result.PgBenchUpdate.TransactionsPerSecond} tps");
            await pgbench.DropAsync(cancellationToken);
        }
    }

    /// <summary>
    /// Drives both nodes and the generator (JIT tiering, connection pools, thread pool) with new
    /// registrations and their heartbeats for the warm-up time, so that no timed phase pays for
    /// compiling its hot path. Node B warms by loading what A announces.
    /// </summary>
    private async Task WarmUpAsync(RegistryHttp httpA, RegistryHttp httpB, CancellationToken cancellationToken)
    {
        await _log.WriteLineAsync($"Warming up for {_options.WarmUp.TotalSeconds:0.#} s…");
        var began = Stopwatch.GetTimestamp();
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, _options.Concurrency).Select(async _ =>
        {
            await Task.Yield();
            using var connection = new LeanConnection(httpA.BaseAddress);
            while (Stopwatch.GetElapsedTime(began) < _options.WarmUp)
            {
                var i = Interlocked.Increment(ref next);
                var body = Encoding.UTF8.GetBytes(RegistryHttp.Provider($"{BenchDatabase.Prefix}warm-{i % 100}", Addr(i)));
                await connection.SendAsync(httpA.Post("/v1/register?ttl=3600", body, i), cancellationToken);
                await connection.SendAsync(httpA.Post("/v1/heartbeat", body, i), cancellationToken);
            }
        }));
        await httpB.SubscribeAsync($"{BenchDatabase.Prefix}warm-0", null, 0, null, cancellationToken);
    }

    private static string Addr(int i) => string.Create(CultureInfo.InvariantCulture, $"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:8080");

    private static async Task<DatabaseWork?> MeasureAsync(BenchDatabase? database, BenchDatabase.Counters? before, CancellationToken cancellationToken) =>
        database is null || before is not { } start ? null : BenchDatabase.Between(start, await database.ReadAsync(cancellationToken));

    private static async Task<BenchDatabase.Counters?> CountersAsync(BenchDatabase? database, CancellationToken cancellationToken) =>
        database is null ? null : await database.ReadAsync(cancellationToken);

    /// <summary>
    /// The registrations of <paramref name="count"/> providers as bytes ready to send: built
    /// before the clock starts, as pgbench parses its script before its run.
    /// </summary>
    private static byte[][] Registrations(RegistryHttp http, int count, Func<int, string> body, int ttl) =>
        Enumerable.Range(0, count)
            .Select(i => http.Post($"/v1/register?ttl={ttl}", Encoding.UTF8.GetBytes(body(i)), i))
            .ToArray();

    /// <summary>Sends the registrations with <paramref name="concurrency"/> workers; returns each latency (ms) and the errors.</summary>
    private static async Task<(double[] Latencies, int Errors, double Seconds)> RegisterManyAsync(
        RegistryHttp http, byte[][] requests, int concurrency, CancellationToken cancellationToken)
    {
        var count = requests.Length;
        var latencies = new double[count];
        var next = -1;
        var errors = 0;
        var began = Stopwatch.GetTimestamp();
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async _ =>
        {
            await Task.Yield();
            using var connection = new LeanConnection(http.BaseAddress);
            for (var i = Interlocked.Increment(ref next); i < count; i = Interlocked.Increment(ref next))
            {
                var sent = Stopwatch.GetTimestamp();
                var status = await connection.SendAsync(requests[i], cancellationToken);
                latencies[i] = Stopwatch.GetElapsedTime(sent).TotalMilliseconds;
                if (status is not (200 or 201))
                {
                    Interlocked.Increment(ref errors);
                }
            }
        }));
        return (latencies, errors, Stopwatch.GetElapsedTime(began).TotalSeconds);
    }

    private async Task<RegistrationResult> RegistrationAsync(
        string prefix, int concurrency, RegistryHttp http, BenchDatabase? database, ServerNode node, ServerNode? other, CancellationToken cancellationToken)
    {
        var requests = Registrations(
            http,
            _options.Registrations,
            i => RegistryHttp.Provider($"{BenchDatabase.Prefix}{prefix}-{i % 100}", Addr(i), new Dictionary<string, string> { ["zone"] = $"z{i % 3}" }),
            3600);
        var cpu = CpuSeconds(node, other, database);
        var before = await CountersAsync(database, cancellationToken);
        var (latencies, errors, seconds) = await RegisterManyAsync(http, requests, concurrency, cancellationToken);
        var work = await MeasureAsync(database, before, cancellationToken);
        return new RegistrationResult(
            _options.Registrations, errors, concurrency, Math.Round(seconds, 3), Math.Round(_options.Registrations / seconds, 1),
            Distribution.Of(latencies), work ?? Empty(seconds), CpuSince(node, other, database, cpu));
    }

    /// <summary>The middle run by <paramref name="rate"/> (there is an odd number of them).</summary>
    private static T Median<T>(List<T> runs, Func<T, double> rate) => runs.OrderBy(rate).ElementAt(runs.Count / 2);

    private static (double? Node, double? Other, TimeSpan Generator, double? Database) CpuSeconds(ServerNode node, ServerNode? other, BenchDatabase? database) =>
        (node.Sample()?.CpuSeconds, other?.Sample()?.CpuSeconds, Process.GetCurrentProcess().TotalProcessorTime, database?.CpuSeconds());

    private static CpuUse CpuSince(ServerNode node, ServerNode? other, BenchDatabase? database, (double? Node, double? Other, TimeSpan Generator, double? Database) before)
    {
        var now = CpuSeconds(node, other, database);
        return new CpuUse(
            Since(before.Node, now.Node),
            Since(before.Other, now.Other),
            Math.Round((now.Generator - before.Generator).TotalSeconds, 2),
            Since(before.Database, now.Database));

        static double? Since(double? start, double? end) => start is { } s && end is { } e ? Math.Round(e - s, 2) : null;
    }

    private static DatabaseWork Empty(double seconds) => new(null, 0, 0, 0, 0, seconds);

    private async Task<HeartbeatResult> HeartbeatsAsync(RegistryHttp http, BenchDatabase? database, ServerNode node, ServerNode? other, CancellationToken cancellationToken)
    {
        var instances = _options.HeartbeatInstances;
        string Body(int i) => RegistryHttp.Provider($"{BenchDatabase.Prefix}hb-{i % 100}", Addr(i));
        var (_, registerErrors, _) = await RegisterManyAsync(
            http, Registrations(http, instances, Body, _options.HeartbeatTtlSeconds), _options.Concurrency, cancellationToken);
        if (registerErrors > 0)
        {
            throw new InvalidOperationException($"{registerErrors} of the heartbeating instances could not be registered.");
        }

        var requests = Enumerable.Range(0, instances)
            .Select(i => http.Post("/v1/heartbeat", Encoding.UTF8.GetBytes(Body(i)), i))
            .ToArray();
        var cpu = CpuSeconds(node, other, database);
        var before = await CountersAsync(database, cancellationToken);
        var (all, errors, seconds) = await SendForAsync(http.BaseAddress, requests, _options.Concurrency, _options.HeartbeatDuration, cancellationToken);
        var work = await MeasureAsync(database, before, cancellationToken);
        return new HeartbeatResult(
            instances, all.Length, errors, _options.Concurrency, Math.Round(seconds, 3), Math.Round(all.Length / seconds, 1),
            Distribution.Of(all), work ?? Empty(seconds), CpuSince(node, other, database, cpu));
    }

    /// <summary>
    /// Sends the requests round and round with <paramref name="concurrency"/> workers on lean
    /// connections for <paramref name="duration"/>; returns each latency (ms), the answers that
    /// were not 200 and the seconds it took.
    /// </summary>
    private static async Task<(double[] Latencies, int Errors, double Seconds)> SendForAsync(
        Uri server, byte[][] requests, int concurrency, TimeSpan duration, CancellationToken cancellationToken)
    {
        var latencies = new List<double>[concurrency];
        var errors = 0;
        var next = -1;
        var began = Stopwatch.GetTimestamp();
        await Task.WhenAll(Enumerable.Range(0, concurrency).Select(async worker =>
        {
            await Task.Yield();
            var mine = latencies[worker] = new List<double>(1 << 14);
            using var connection = new LeanConnection(server);
            while (Stopwatch.GetElapsedTime(began) < duration)
            {
                var i = (int)((uint)Interlocked.Increment(ref next) % (uint)requests.Length);
                var sent = Stopwatch.GetTimestamp();
                var status = await connection.SendAsync(requests[i], cancellationToken);
                mine.Add(Stopwatch.GetElapsedTime(sent).TotalMilliseconds);
                if (status is not (200 or 201))
                {
                    Interlocked.Increment(ref errors);
                }
            }
        }));
        return (latencies.SelectMany(l => l).ToArray(), errors, Stopwatch.GetElapsedTime(began).TotalSeconds);
    }

    /// <summary>
    /// Parks <paramref name="consumers"/> polls on one application, optionally measures what
    /// holding them costs, then makes one change and times every consumer's answer from the
    /// moment the change's request was sent.
    /// </summary>
    private async Task<FanOutResult> FanOutAsync(
        RegistryHttp http, ServerNode node, BenchDatabase? database, int consumers, BenchmarkResult result, bool measureIdle, CancellationToken cancellationToken, string label = "")
    {
        var application = $"{BenchDatabase.Prefix}fanout-{consumers}{label}-{++_fanOuts}";
        await http.RegisterAsync(RegistryHttp.Provider(application, InitialAddr), 3600, cancellationToken);
        var version = (await http.SubscribeAsync(application, null, 0, null, cancellationToken)).Version
            ?? throw new InvalidOperationException("The subscribe answer carried no ETag.");

        DatabaseWork? baseline = null;
        ProcessSample? cpuBefore = null, cpuAfter = null;
        if (measureIdle)
        {
            // The same window with nothing parked: what the nodes do anyway (sweeper, liveness, consistency checks).
            cpuBefore = node.Sample();
            var start = await CountersAsync(database, cancellationToken);
            await Task.Delay(_options.IdleDuration, cancellationToken);
            baseline = await MeasureAsync(database, start, cancellationToken);
            cpuAfter = node.Sample();
        }

        var rssBefore = node.Sample();
        using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var (polls, secondsToPark) = await ParkAsync(consumers, (_, parked) => http.SubscribeAsync(application, version, PollWaitSeconds, parked, giveUp.Token), cancellationToken);
        var early = polls.Count(p => p.IsCompleted);

        if (measureIdle)
        {
            var parkedAt = node.Sample();
            var start = await CountersAsync(database, cancellationToken);
            var statementsBefore = database is null ? [] : await database.ReadByStatementAsync(cancellationToken);
            await Task.Delay(_options.IdleDuration, cancellationToken);
            var parked = await MeasureAsync(database, start, cancellationToken);
            var statementsAfter = database is null ? [] : await database.ReadByStatementAsync(cancellationToken);
            var parkedEnd = node.Sample();
            var seconds = _options.IdleDuration.TotalSeconds;
            var rss = Math.Max(parkedAt?.RssBytes ?? 0, parkedEnd?.RssBytes ?? 0);
            result.Idle = new IdleResult(
                consumers,
                seconds,
                rssBefore?.RssBytes ?? 0,
                rss,
                rssBefore is null ? 0 : Math.Round((rss - rssBefore.RssBytes) / (double)consumers, 1),
                cpuBefore is null || cpuAfter is null ? 0 : Math.Round(100 * (cpuAfter.CpuSeconds - cpuBefore.CpuSeconds) / seconds, 2),
                parkedAt is null || parkedEnd is null ? 0 : Math.Round(100 * (parkedEnd.CpuSeconds - parkedAt.CpuSeconds) / seconds, 2),
                baseline ?? Empty(seconds),
                parked ?? Empty(seconds),
                BenchDatabase.Difference(statementsBefore, statementsAfter));
        }

        var fanOut = await TimeChangeAsync(node, polls, giveUp, secondsToPark, async () =>
        {
            // The change: a second instance of the application.
            var status = await http.RegisterAsync(RegistryHttp.Provider(application, "10.255.0.2:8080"), 3600, cancellationToken);
            if (status is not (HttpStatusCode.OK or HttpStatusCode.Created))
            {
                throw new InvalidOperationException($"The fan-out change answered {(int)status}.");
            }
        }, poll => poll.Status == HttpStatusCode.OK && poll.Version != version ? poll.AnsweredAt : null, cancellationToken);
        if (early > 0)
        {
            result.Notes.Add($"{early} of {consumers} fan-out polls were answered before the change.");
        }

        return fanOut;
    }

    /// <summary>
    /// Opens <paramref name="consumers"/> long polls or watches (<paramref name="open"/> opens the
    /// one of that index and calls its second argument once it is parked) in waves, so the
    /// listen backlog never overflows, and waits until all are parked (60 s at most) and a
    /// moment more for the last to settle.
    /// </summary>
    private static async Task<(Task<T>[] Waits, double SecondsToPark)> ParkAsync<T>(int consumers, Func<int, Action, Task<T>> open, CancellationToken cancellationToken)
    {
        const int Wave = 250;
        var sent = 0;
        var waits = new Task<T>[consumers];
        var rampStarted = Stopwatch.GetTimestamp();
        for (var i = 0; i < consumers; i++)
        {
            waits[i] = open(i, () => Interlocked.Increment(ref sent));
            if ((i + 1) % Wave == 0)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(25), cancellationToken);
            }
        }

        while (Volatile.Read(ref sent) < consumers && Stopwatch.GetElapsedTime(rampStarted) < TimeSpan.FromSeconds(60))
        {
            await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
        }

        var secondsToPark = Stopwatch.GetElapsedTime(rampStarted).TotalSeconds;
        // The last requests are on the wire; give the server a moment to park them.
        await Task.Delay(TimeSpan.FromMilliseconds(Math.Clamp(consumers / 10, 200, 2000)), cancellationToken);
        return (waits, secondsToPark);
    }

    /// <summary>
    /// The timed change, the same for every target: sends <paramref name="change"/>, waits for
    /// every parked consumer (20 s at most, through <paramref name="giveUp"/>), and times each
    /// answer that carries the change (<paramref name="answeredAt"/>: its Stopwatch timestamp,
    /// or null) from the moment the change was sent, with the server's and the generator's CPU
    /// and the generator's GC pauses over the window.
    /// </summary>
    private static async Task<FanOutResult> TimeChangeAsync<T>(
        ServerNode server, Task<T>[] waits, CancellationTokenSource giveUp, double secondsToPark, Func<Task> change, Func<T, long?> answeredAt, CancellationToken cancellationToken)
    {
        // The generator's own GC pauses would delay the timestamps of answers that have already
        // arrived (a 100 ms gen1 pause with 10,000 connections open was seen), so the timed window
        // runs without GC when the runtime can promise it; pauses that still happen are reported.
        var noGc = StartNoGcRegion();
        var serverCpu = server.Sample();
        var generatorCpu = Process.GetCurrentProcess().TotalProcessorTime;
        var generatorPauses = GC.GetTotalPauseDuration();
        var changeSent = Stopwatch.GetTimestamp();
        await change();
        var acknowledged = Stopwatch.GetElapsedTime(changeSent).TotalMilliseconds;
        giveUp.CancelAfter(TimeSpan.FromSeconds(20));
        try
        {
            await Task.WhenAll(waits).WaitAsync(cancellationToken);
        }
        catch (Exception e) when (e is OperationCanceledException or HttpRequestException or IOException && !cancellationToken.IsCancellationRequested)
        {
            // Counted as missed or as errors below.
        }

        var serverCpuMs = serverCpu is null || server.Sample() is not { } after ? (double?)null : Math.Round((after.CpuSeconds - serverCpu.CpuSeconds) * 1000, 1);
        var generatorCpuMs = Math.Round((Process.GetCurrentProcess().TotalProcessorTime - generatorCpu).TotalMilliseconds, 1);
        var generatorPauseMs = Math.Round((GC.GetTotalPauseDuration() - generatorPauses).TotalMilliseconds, 1);
        if (noGc && System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion)
        {
            GC.EndNoGCRegion();
        }

        var delays = new List<double>(waits.Length);
        int missed = 0, errors = 0;
        foreach (var wait in waits)
        {
            if (wait.IsCompletedSuccessfully && answeredAt(wait.Result) is { } at)
            {
                delays.Add(Stopwatch.GetElapsedTime(changeSent, at).TotalMilliseconds);
            }
            else if (wait.IsFaulted)
            {
                errors++;
            }
            else
            {
                missed++;
            }
        }

        return new FanOutResult(
            waits.Length, delays.Count, missed + errors, errors, Distribution.Of(delays), delays.Count == 0 ? 0 : Distribution.Round(delays.Min()),
            Distribution.Round(acknowledged), serverCpuMs, generatorCpuMs, generatorPauseMs, Math.Round(secondsToPark, 3), Histogram.Render(delays))
        {
            Delays = delays,
        };
    }

    /// <summary>
    /// One application of many instances with about 400 B of meta each, and subscriptions that
    /// each name it plus a provider of their own, all parked on one node: what holding them
    /// costs the node's memory beyond the first, and what one registration to the big
    /// application costs its CPU, next to answering one such subscription at once.
    /// </summary>
    private async Task<OverlapResult> OverlapAsync(RegistryHttp http, ServerNode node, CancellationToken cancellationToken)
    {
        var big = $"{BenchDatabase.Prefix}overlap-big";
        var count = _options.OverlapSubscriptions;
        var subscriptions = Enumerable.Range(0, count).Select(i => new[] { big, $"{BenchDatabase.Prefix}overlap-{i}" }).ToArray();
        var requests = Registrations(http, _options.OverlapInstances, i => RegistryHttp.Provider(big, Addr(i), OverlapMeta(i)), 3600)
            .Concat(Registrations(http, count, i => RegistryHttp.Provider(subscriptions[i][1], InitialAddr), 3600))
            .ToArray();
        var (_, registrationErrors, _) = await RegisterManyAsync(http, requests, _options.Concurrency, cancellationToken);
        if (registrationErrors > 0)
        {
            throw new InvalidOperationException($"{registrationErrors} of the overlap scenario's registrations failed.");
        }

        // Every subscription answered once (its version, and its fragments computed), then all
        // again, timed: the node's CPU for answering one at once.
        var versions = new string[count];
        long answerBytes = 0;
        for (var i = 0; i < count; i++)
        {
            var answer = await http.SubscribeAsync(subscriptions[i], null, 0, null, cancellationToken);
            versions[i] = answer.Version ?? throw new InvalidOperationException("The subscribe answer carried no ETag.");
            answerBytes = Math.Max(answerBytes, answer.Bytes);
        }

        var answersCpu = node.Sample();
        foreach (var subscription in subscriptions)
        {
            await http.SubscribeAsync(subscription, null, 0, null, cancellationToken);
        }

        var cpuPerAnswerMs = answersCpu is null || node.Sample() is not { } answered ? 0 : (answered.CpuSeconds - answersCpu.CpuSeconds) * 1000 / count;

        using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var settle = TimeSpan.FromMilliseconds(Math.Clamp(count, 200, 2000));
        Task<RegistryHttp.PollAnswer> PollHolding(int i, string version, Action parked) => http.SubscribeAsync(subscriptions[i], version, PollWaitSeconds, parked, giveUp.Token);
        Task<RegistryHttp.PollAnswer> Poll(int i, Action parked) => PollHolding(i, versions[i], parked);
        var (first, _) = await ParkAsync(1, (_, parked) => Poll(0, parked), cancellationToken);
        await Task.Delay(settle, cancellationToken);
        var rssFirst = node.Sample()?.RssBytes ?? 0;

        var (rest, _) = await ParkAsync(count - 1, (i, parked) => Poll(i + 1, parked), cancellationToken);
        var polls = first.Concat(rest).ToArray();
        await Task.Delay(settle, cancellationToken);
        var rssAll = node.Sample()?.RssBytes ?? 0;

        // The usual registration, while the same polls are parked: an application none of them names.
        var usual = new List<double>();
        for (var i = 0; i < 20; i++)
        {
            var began = Stopwatch.GetTimestamp();
            await http.RegisterAsync(RegistryHttp.Provider($"{BenchDatabase.Prefix}overlap-other", Addr(i)), 3600, cancellationToken);
            usual.Add(Stopwatch.GetElapsedTime(began).TotalMilliseconds);
        }

        const string Recompute = "registry_answers_recompute_duration";
        var recomputedBefore = await http.HistogramSumAsync(Recompute, cancellationToken) ?? 0;
        var changeCpu = node.Sample();
        var changeSent = Stopwatch.GetTimestamp();
        var status = await http.RegisterAsync(RegistryHttp.Provider(big, "10.255.0.2:8080", OverlapMeta(_options.OverlapInstances)), 3600, cancellationToken);
        var acknowledgedMs = Stopwatch.GetElapsedTime(changeSent).TotalMilliseconds;
        var acknowledgedCpu = node.Sample();
        if (status is not (HttpStatusCode.OK or HttpStatusCode.Created))
        {
            throw new InvalidOperationException($"The overlap change answered {(int)status}.");
        }

        giveUp.CancelAfter(TimeSpan.FromSeconds(45));
        try
        {
            await Task.WhenAll(polls);
        }
        catch (OperationCanceledException)
        {
            // Counted as missed below.
        }
        catch (HttpRequestException)
        {
            // Counted as missed below.
        }

        var allCpu = node.Sample();
        var recomputeMs = await http.HistogramSumAsync(Recompute, cancellationToken) is { } recomputed ? Math.Round(recomputed - recomputedBefore, 2) : (double?)null;
        var delays = polls
            .Select((poll, i) => (poll, i))
            .Where(p => p.poll.IsCompletedSuccessfully && p.poll.Result.Status == HttpStatusCode.OK && p.poll.Result.Version != versions[p.i])
            .Select(p => Stopwatch.GetElapsedTime(changeSent, p.poll.Result.AnsweredAt).TotalMilliseconds)
            .ToArray();
        var recomputes = recomputeMs is { } once && delays.Length == count
            ? await RecomputeAgainAsync(http, big, polls, PollHolding, giveUp, once, cancellationToken)
            : [];
        static double Ms(ProcessSample? from, ProcessSample? to) => from is null || to is null ? 0 : Math.Round((to.CpuSeconds - from.CpuSeconds) * 1000, 1);
        return new OverlapResult(
            _options.OverlapInstances, answerBytes, count, delays.Length, count - delays.Length, rssFirst, rssAll,
            count, Math.Round(cpuPerAnswerMs, 2), Ms(changeCpu, acknowledgedCpu), Ms(changeCpu, allCpu),
            Distribution.Round(acknowledgedMs), Distribution.Of(usual), Distribution.Of(delays), allCpu?.RssBytes ?? 0, recomputeMs)
        {
            RecomputeMsPerChange = recomputes,
        };
    }

    /// <summary>Changes to the big application after the timed one, so the recomputation is judged on more than one sample.</summary>
    private const int OverlapChanges = 5;

    /// <summary>
    /// The recomputation of <see cref="OverlapChanges"/> changes in all, the timed one first: before each further
    /// change every subscription is parked again on the answer it was given (a view nobody holds is dropped, not
    /// recomputed). One change is a few milliseconds on a loader thread that shares two cores with everything else.
    /// </summary>
    private static async Task<double[]> RecomputeAgainAsync(
        RegistryHttp http, string big, Task<RegistryHttp.PollAnswer>[] answered, Func<int, string, Action, Task<RegistryHttp.PollAnswer>> poll,
        CancellationTokenSource giveUp, double first, CancellationToken cancellationToken)
    {
        const string Recompute = "registry_answers_recompute_duration";
        var recomputes = new List<double> { first };
        for (var change = 1; change < OverlapChanges; change++)
        {
            var held = answered.Select(a => a.Result.Version!).ToArray();
            giveUp.CancelAfter(TimeSpan.FromSeconds(45));
            (answered, _) = await ParkAsync(held.Length, (i, parked) => poll(i, held[i], parked), cancellationToken);
            var before = await http.HistogramSumAsync(Recompute, cancellationToken) ?? 0;
            var addr = string.Create(CultureInfo.InvariantCulture, $"10.255.{change}.2:8080");
            var status = await http.RegisterAsync(RegistryHttp.Provider(big, addr, OverlapMeta(change)), 3600, cancellationToken);
            try
            {
                await Task.WhenAll(answered);
            }
            catch (Exception e) when (e is OperationCanceledException or HttpRequestException)
            {
                break; // judged on the changes measured so far
            }

            // Only a change every subscription heard is a sample (a refused write or poll recomputes nothing).
            if (status is not (HttpStatusCode.OK or HttpStatusCode.Created)
                || Enumerable.Range(0, held.Length).Any(i => answered[i].Result is var a && (a.Status != HttpStatusCode.OK || a.Version is null || a.Version == held[i])))
            {
                break;
            }

            recomputes.Add(Math.Round((await http.HistogramSumAsync(Recompute, cancellationToken) ?? 0) - before, 2));
        }

        return [.. recomputes];
    }

    /// <summary>About 400 B of meta, as a service with a few labels carries.</summary>
    private static Dictionary<string, string> OverlapMeta(int i) => new(StringComparer.Ordinal)
    {
        ["zone"] = string.Create(CultureInfo.InvariantCulture, $"zone-{i % 3}"),
        ["version"] = "2.14.7",
        ["owner"] = "platform-identity",
        ["labels"] = new string('x', 330),
    };

    /// <summary>Asks the runtime for a window without GC (it collects first, before anything is timed); false when it cannot promise one.</summary>
    private static bool StartNoGcRegion()
    {
        foreach (var megabytes in new long[] { 240, 120, 60 })
        {
            try
            {
                return GC.TryStartNoGCRegion(megabytes * 1024 * 1024);
            }
            catch (ArgumentOutOfRangeException)
            {
                // More than this GC mode can set aside: ask for less.
            }
            catch (InvalidOperationException)
            {
                return false;
            }
        }

        return false;
    }

    /// <summary>Each round: consumers parked on B, one registration on A, time until B answers them.</summary>
    private async Task<CrossNodeResult> CrossNodeAsync(RegistryHttp httpA, RegistryHttp httpB, CancellationToken cancellationToken)
    {
        var application = $"{BenchDatabase.Prefix}xnode";
        await httpA.RegisterAsync(RegistryHttp.Provider(application, InitialAddr), 3600, cancellationToken);
        // B learns of it through the change feed; wait until it has.
        string? version = null;
        for (var attempt = 0; attempt < 100 && version is null; attempt++)
        {
            var answer = await httpB.SubscribeAsync(application, null, 0, null, cancellationToken);
            var probe = await httpA.SubscribeAsync(application, null, 0, null, cancellationToken);
            version = answer.Version == probe.Version ? answer.Version : null;
            if (version is null)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
            }
        }

        if (version is null)
        {
            throw new InvalidOperationException("Node B never caught up with node A.");
        }

        var delays = new List<double>();
        var missed = 0;
        for (var round = 0; round < _options.CrossNodeRounds; round++)
        {
            using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var sent = 0;
            var polls = Enumerable.Range(0, _options.CrossNodeConsumers)
                .Select(_ => httpB.SubscribeAsync(application, version, PollWaitSeconds, () => Interlocked.Increment(ref sent), giveUp.Token))
                .ToArray();
            for (var wait = 0; wait < 250 && Volatile.Read(ref sent) < polls.Length; wait++)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(2), cancellationToken);
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
            var changeSent = Stopwatch.GetTimestamp();
            await httpA.RegisterAsync(RegistryHttp.Provider(application, $"10.254.{round / 250}.{round % 250 + 1}:8080"), 3600, cancellationToken);
            giveUp.CancelAfter(TimeSpan.FromSeconds(10));
            try
            {
                await Task.WhenAll(polls);
            }
            catch (OperationCanceledException)
            {
                // Counted as missed below.
            }

            string? newVersion = null;
            foreach (var poll in polls)
            {
                if (poll.IsCompletedSuccessfully && poll.Result.Version is { } v && v != version)
                {
                    delays.Add(Stopwatch.GetElapsedTime(changeSent, poll.Result.AnsweredAt).TotalMilliseconds);
                    newVersion = v;
                }
                else
                {
                    missed++;
                }
            }

            version = newVersion ?? (await httpB.SubscribeAsync(application, null, 0, null, cancellationToken)).Version;
        }

        return new CrossNodeResult(_options.CrossNodeRounds, delays.Count, missed, Distribution.Of(delays));
    }

    /// <summary>A fresh node against a database of N instances: time until it answers with all of them, and its memory.</summary>
    private async Task<ColdStartResult> ColdStartAsync(string serverDll, BenchDatabase database, string work, CancellationToken cancellationToken)
    {
        await database.DeleteBenchRowsAsync(cancellationToken);
        await database.SeedColdStartAsync(_options.ColdStartInstances, cancellationToken);
        await using var node = ServerNode.Start("node-cold", serverDll, database.ConnectionString, work, _options.NodeEnvironment);
        using var http = new RegistryHttp(node.Url);
        await node.WaitForAsync(http.Client, "/healthz", TimeSpan.FromSeconds(120), cancellationToken);
        var listening = Stopwatch.GetElapsedTime(node.StartTimestamp).TotalSeconds;
        var prefix = $"{BenchDatabase.Prefix}cold-";
        TimeSpan? serving = null;
        for (var attempt = 0; attempt < 6000 && serving is null; attempt++)
        {
            using var response = await http.Client.GetAsync(new Uri("/v1/services", UriKind.Relative), cancellationToken);
            if (response.IsSuccessStatusCode)
            {
                using var document = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync(cancellationToken));
                var loaded = document.RootElement.GetProperty("services").EnumerateArray()
                    .Where(s => s.GetProperty("application").GetString()!.StartsWith(prefix, StringComparison.Ordinal))
                    .Sum(s => s.GetProperty("instances").GetInt32());
                if (loaded >= _options.ColdStartInstances)
                {
                    serving = Stopwatch.GetElapsedTime(node.StartTimestamp);
                    break;
                }
            }

            await Task.Delay(TimeSpan.FromMilliseconds(10), cancellationToken);
        }

        if (serving is null)
        {
            throw new TimeoutException("The cold node never served all the seeded instances.");
        }

        var rssServing = node.Sample()?.RssBytes ?? 0;
        await Task.Delay(TimeSpan.FromSeconds(_options.Smoke ? 0.2 : 3), cancellationToken);
        var rssSettled = node.Sample()?.RssBytes ?? 0;
        return new ColdStartResult(_options.ColdStartInstances, Math.Round(listening, 3), Math.Round(serving.Value.TotalSeconds, 3), rssServing, rssSettled);
    }
}
