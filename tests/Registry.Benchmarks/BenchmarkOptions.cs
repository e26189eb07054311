using System.Globalization;

namespace Registry.Benchmarks;

/// <summary>What to measure and how hard; <see cref="Parse"/> reads the command line.</summary>
public sealed record BenchmarkOptions
{
    /// <summary>What <c>--only</c> may name.</summary>
    private static readonly string[] Scenarios = ["auth", "etcd", "first-seconds", "overlap", "probes", "scale", "sessions"];

    /// <summary>A seconds-long run for the test suite: tiny loads, no pgbench.</summary>
    public bool Smoke { get; init; }

    /// <summary>Targets a running node instead of starting nodes (node B optional).</summary>
    public Uri? Url { get; init; }

    /// <summary>A second running node for the cross-node figure (with <see cref="Url"/>).</summary>
    public Uri? UrlB { get; init; }

    /// <summary>The database the nodes use; empty starts a private cluster. Needed with --url for database figures.</summary>
    public string? ConnectionString { get; init; }

    /// <summary>With --url: the node's process id, so its memory and CPU can be read from /proc.</summary>
    public int? ServerPid { get; init; }

    /// <summary>The built Registry.Server.dll; empty finds it beside the repository's sources.</summary>
    public string? ServerDll { get; init; }

    /// <summary>Concurrent requests for registrations and heartbeats (and pgbench clients).</summary>
    public int Concurrency { get; init; } = 64;

    /// <summary>
    /// How long the nodes are driven (registrations of new instances, heartbeats) before anything
    /// is timed: until the JIT has finished tiering up the hot paths, so figures are steady state.
    /// </summary>
    public TimeSpan WarmUp { get; init; } = TimeSpan.FromSeconds(8);

    /// <summary>Registrations measured (each a new instance); about as long as a pgbench run.</summary>
    public int Registrations { get; init; } = 100_000;

    /// <summary>
    /// Rounds of the judged registration figure, each followed by a pgbench upsert run: the
    /// target compares the median rates, so one noisy window on a shared machine does not
    /// decide it. Odd, so the median is one round.
    /// </summary>
    public int RegistrationRounds { get; init; } = 3;

    /// <summary>
    /// Concurrent registrations in the burst figure: a deploy registering hundreds of
    /// instances at once, the load group commit is for. Judged against pgbench at
    /// <see cref="Concurrency"/> clients, about its best on a small machine (hundreds of
    /// backends on two cores slow it down).
    /// </summary>
    public int BurstConcurrency { get; init; } = 256;

    /// <summary>Instances that heartbeat.</summary>
    public int HeartbeatInstances { get; init; } = 10_000;

    /// <summary>Lease of the heartbeating instances: short, so renewals really reach the database during the run.</summary>
    public int HeartbeatTtlSeconds { get; init; } = 10;

    /// <summary>How long heartbeats are sent.</summary>
    public TimeSpan HeartbeatDuration { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Parked consumers in each fan-out run; the largest is also the idle-cost run.</summary>
    public IReadOnlyList<int> FanOutConsumers { get; init; } = [1_000, 10_000];

    /// <summary>How long the parked polls are held for the idle-cost figures (and the baseline before them).</summary>
    public TimeSpan IdleDuration { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>Cross-node rounds (write on A, consumers parked on B).</summary>
    public int CrossNodeRounds { get; init; } = 100;

    /// <summary>Consumers parked on B in each cross-node round.</summary>
    public int CrossNodeConsumers { get; init; } = 10;

    /// <summary>Instances in the database a cold node loads.</summary>
    public int ColdStartInstances { get; init; } = 100_000;

    /// <summary>Instances (each with about 400 B of meta) of the application every overlapping subscription names.</summary>
    public int OverlapInstances { get; init; } = 2_000;

    /// <summary>Parked subscriptions that each name the big application and a provider of their own.</summary>
    public int OverlapSubscriptions { get; init; } = 500;

    /// <summary>
    /// The main phases (fan-out, idle cost, cross-node, registrations with pgbench, heartbeats,
    /// cold start); <c>--only</c> turns them off to run just the scenarios it names.
    /// </summary>
    public bool MainPhases { get; init; } = true;

    /// <summary>The overlapping-subscriptions scenario (on one node).</summary>
    public bool Overlap { get; init; } = true;

    /// <summary>
    /// Registrations, heartbeats and fan-out on a node with access control Required (one token
    /// per load client) against a node without, alternating in the same run.
    /// </summary>
    public bool AuthComparison { get; init; }

    /// <summary>A fresh node's first ten seconds (fan-out, registrations) next to the same node warmed.</summary>
    public bool ColdWork { get; init; }

    /// <summary>Tens of thousands of parked polls on one node (<see cref="ScaleConsumers"/>).</summary>
    public bool Scale { get; init; }

    /// <summary>How many polls the scale scenario parks.</summary>
    public int ScaleConsumers { get; init; } = 50_000;

    /// <summary>Sessions held open on one node (<see cref="SessionCount"/>): memory per session, and a reset session's subscribers woken.</summary>
    public bool Sessions { get; init; }

    /// <summary>How many sessions the sessions scenario opens.</summary>
    public int SessionCount { get; init; } = 10_000;

    /// <summary>Sessions reset one at a time, each with <see cref="SessionSubscribers"/> polls parked on its application.</summary>
    public int SessionKills { get; init; } = 50;

    /// <summary>Polls parked on a session's application while it is reset.</summary>
    public int SessionSubscribers { get; init; } = 100;

    /// <summary>etcd as a peer (skipped with a note when there is no etcd binary).</summary>
    public bool Etcd { get; init; }

    /// <summary>The etcd binary; empty looks for /usr/bin/etcd and PATH.</summary>
    public string? EtcdPath { get; init; }

    /// <summary>Bearer tokens created for the auth comparison (load clients; fan-out consumers take them in turn).</summary>
    public int AuthTokens { get; init; } = 256;

    /// <summary>Runs only the drain scenario (<see cref="DrainBenchmark"/>), with the largest fan-out's consumers over two nodes.</summary>
    public bool DrainOnly { get; init; }

    /// <summary>Probed instances in the probe scenario (<see cref="ProbeBenchmark"/>); 0 leaves it off.</summary>
    public int Probes { get; init; }

    /// <summary>The probe interval the probe scenario registers with.</summary>
    public int ProbeIntervalSeconds { get; init; } = 10;

    /// <summary>How long the probe scenario counts probes after one full interval has passed.</summary>
    public TimeSpan ProbeWindow { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Seconds each pgbench run lasts.</summary>
    public TimeSpan PgBenchDuration { get; init; } = TimeSpan.FromSeconds(6);

    /// <summary>Runs pgbench for the ceiling.</summary>
    public bool PgBench { get; init; } = true;

    /// <summary>The pgbench binary; empty searches /usr/lib/postgresql/*/bin and PATH.</summary>
    public string? PgBenchPath { get; init; }

    /// <summary>Private cluster without fsync (faster, not what production runs).</summary>
    public bool NoFsync { get; init; }

    /// <summary>Extra environment for the nodes this tool starts (KEY=VALUE), e.g. runtime settings to compare.</summary>
    public IReadOnlyDictionary<string, string> NodeEnvironment { get; init; } = new Dictionary<string, string>();

    /// <summary>Where the JSON results go.</summary>
    public string? OutputJson { get; init; }

    /// <summary>Where the Markdown table and histogram go.</summary>
    public string? OutputMarkdown { get; init; }

    /// <summary>
    /// The files the results are written to: only those asked for (<c>--out</c>, <c>--markdown</c>;
    /// the Markdown beside the JSON when only <c>--out</c> is given). None by default, so a trial
    /// run never replaces the results committed for the record; the report goes to stdout anyway.
    /// </summary>
    public (string? Json, string? Markdown) ResultFiles =>
        (OutputJson, OutputMarkdown ?? (OutputJson is null ? null : Path.ChangeExtension(OutputJson, ".md")));

    /// <summary>Folder for the private cluster and node logs; empty makes one under the temporary folder.</summary>
    public string? WorkDirectory { get; init; }

    public static BenchmarkOptions SmokeDefaults => new()
    {
        Smoke = true,
        Concurrency = 8,
        WarmUp = TimeSpan.FromMilliseconds(500),
        Registrations = 300,
        RegistrationRounds = 1,
        BurstConcurrency = 16,
        HeartbeatInstances = 100,
        HeartbeatTtlSeconds = 10,
        HeartbeatDuration = TimeSpan.FromSeconds(1),
        FanOutConsumers = [20],
        IdleDuration = TimeSpan.FromSeconds(1),
        CrossNodeRounds = 5,
        CrossNodeConsumers = 2,
        ColdStartInstances = 1_000,
        OverlapInstances = 200,
        OverlapSubscriptions = 20,
        SessionCount = 50,
        SessionKills = 5,
        SessionSubscribers = 10,
        PgBench = false,
        NoFsync = true,
    };

    public const string Usage = """
        Registry.Benchmarks [--smoke] [--url URL [--url-b URL] [--server-pid PID]] [--connection-string CS]
                            [--server-dll PATH] [--concurrency N] [--warm-up-seconds S] [--registrations N] [--rounds ODD] [--burst-concurrency N]
                            [--heartbeat-instances N]
                            [--heartbeat-seconds S] [--fanout W[,W…]] [--idle-seconds S] [--cross-node-rounds N]
                            [--cold-start-instances N] [--overlap-instances N] [--overlap-subscriptions N] [--overlap-only] [--drain-only] [--auth-compare] [--auth-tokens N]
                            [--etcd] [--etcd-binary PATH] [--first-seconds] [--scale N] [--sessions N] [--session-kills N] [--session-subscribers N]
                            [--probes N [--probe-interval S] [--probe-window-seconds S]]
                            [--only auth,etcd,first-seconds,overlap,probes,scale,sessions] [--pgbench-seconds S] [--no-pgbench] [--pgbench PATH]
                            [--no-fsync] [--node-env KEY=VALUE]… [--out results.json] [--markdown results.md] [--work-dir DIR]
        """;

    /// <summary>Reads the command line; <c>--smoke</c> first sets the smoke defaults, later flags override them.</summary>
    /// <exception cref="ArgumentException">An unknown flag or a bad value.</exception>
    public static BenchmarkOptions Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var options = args.Contains("--smoke") ? SmokeDefaults : new BenchmarkOptions();
        for (var i = 0; i < args.Count; i++)
        {
            var flag = args[i];
            string Value() => i + 1 < args.Count ? args[++i] : throw new ArgumentException($"{flag} needs a value.");
            int Int() => int.TryParse(Value(), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0
                ? n
                : throw new ArgumentException($"{flag} needs a positive integer.");
            TimeSpan Seconds() => TimeSpan.FromSeconds(Int());
            options = flag switch
            {
                "--smoke" => options,
                "--url" => options with { Url = new Uri(Value()) },
                "--url-b" => options with { UrlB = new Uri(Value()) },
                "--server-pid" => options with { ServerPid = Int() },
                "--connection-string" => options with { ConnectionString = Value() },
                "--server-dll" => options with { ServerDll = Value() },
                "--concurrency" => options with { Concurrency = Int() },
                "--warm-up-seconds" => options with { WarmUp = Seconds() },
                "--registrations" => options with { Registrations = Int() },
                "--burst-concurrency" => options with { BurstConcurrency = Int() },
                "--rounds" => options with { RegistrationRounds = Int() is var rounds && rounds % 2 == 1 ? rounds : throw new ArgumentException("--rounds needs an odd number (the median is one round).") },
                "--heartbeat-instances" => options with { HeartbeatInstances = Int() },
                "--heartbeat-seconds" => options with { HeartbeatDuration = Seconds() },
                "--fanout" => options with
                {
                    FanOutConsumers = Value().Split(',').Select(w => int.Parse(w, NumberStyles.None, CultureInfo.InvariantCulture)).ToArray(),
                },
                "--idle-seconds" => options with { IdleDuration = Seconds() },
                "--cross-node-rounds" => options with { CrossNodeRounds = Int() },
                "--cold-start-instances" => options with { ColdStartInstances = Int() },
                "--overlap-instances" => options with { OverlapInstances = Int() },
                "--overlap-subscriptions" => options with { OverlapSubscriptions = Int() },
                "--overlap-only" => Only(options, "overlap"),
                "--drain-only" => options with { DrainOnly = true },
                "--only" => Only(options, Value()),
                "--auth-compare" => options with { AuthComparison = true },
                "--etcd" => options with { Etcd = true },
                "--first-seconds" => options with { ColdWork = true },
                "--scale" => options with { Scale = true, ScaleConsumers = Int() },
                "--sessions" => options with { Sessions = true, SessionCount = Int() },
                "--session-kills" => options with { SessionKills = Int() },
                "--session-subscribers" => options with { SessionSubscribers = Int() },
                "--probes" => options with { Probes = Int() },
                "--probe-interval" => options with { ProbeIntervalSeconds = Int() },
                "--probe-window-seconds" => options with { ProbeWindow = Seconds() },
                "--etcd-binary" => options with { Etcd = true, EtcdPath = Value() },
                "--auth-tokens" => options with { AuthTokens = Int() },
                "--pgbench-seconds" => options with { PgBenchDuration = Seconds() },
                "--no-pgbench" => options with { PgBench = false },
                "--pgbench" => options with { PgBenchPath = Value() },
                "--no-fsync" => options with { NoFsync = true },
                "--node-env" => options with { NodeEnvironment = WithVariable(options.NodeEnvironment, Value()) },
                "--out" => options with { OutputJson = Value() },
                "--markdown" => options with { OutputMarkdown = Value() },
                "--work-dir" => options with { WorkDirectory = Value() },
                _ => throw new ArgumentException($"Unknown argument {flag}."),
            };
        }

        return options;
    }

    /// <summary><c>--only auth,overlap</c>: just the scenarios named, without the main phases.</summary>
    private static BenchmarkOptions Only(BenchmarkOptions options, string list)
    {
        var names = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (names.Length == 0 || names.Except(Scenarios, StringComparer.Ordinal).Any())
        {
            throw new ArgumentException($"--only takes a comma-separated list of {string.Join(", ", Scenarios)}, not {list}.");
        }

        return options with
        {
            MainPhases = false,
            Overlap = names.Contains("overlap"),
            AuthComparison = names.Contains("auth"),
            Etcd = names.Contains("etcd"),
            ColdWork = names.Contains("first-seconds"),
            Scale = names.Contains("scale"),
            Sessions = names.Contains("sessions"),
            // The probe scenario runs on its own; --probes N says how many (10,000 when only named).
            Probes = names.Contains("probes") ? (options.Probes > 0 ? options.Probes : 10_000) : options.Probes,
        };
    }

    private static Dictionary<string, string> WithVariable(IReadOnlyDictionary<string, string> variables, string assignment)
    {
        var equals = assignment.IndexOf('=', StringComparison.Ordinal);
        if (equals <= 0)
        {
            throw new ArgumentException($"--node-env needs KEY=VALUE, not {assignment}.");
        }

        return new Dictionary<string, string>(variables, StringComparer.Ordinal) { [assignment[..equals]] = assignment[(equals + 1)..] };
    }
}
