namespace Registry.Benchmarks;

/// <summary>Everything one run measured; serialised as the results JSON.</summary>
public sealed record BenchmarkResult
{
    public required DateTimeOffset StartedAt { get; init; }

    public required MachineInfo Machine { get; init; }

    public required RunSettings Settings { get; init; }

    /// <summary>/proc/loadavg when the run started and ended: other work on the machine skews every figure.</summary>
    public string? LoadAverageAtStart { get; init; }

    public string? LoadAverageAtEnd { get; set; }

    /// <summary>Registrations on one node at pgbench's client count: the median of <see cref="RegistrationRounds"/> by rate.</summary>
    public RegistrationResult? Registration { get; set; }

    /// <summary>Each round of registrations on one node, in the order run.</summary>
    public List<RegistrationResult> RegistrationRounds { get; } = [];

    /// <summary>Registrations on one node in a deploy's burst, the target's figure: the median of <see cref="BurstRounds"/> by rate.</summary>
    public RegistrationResult? Burst { get; set; }

    /// <summary>Each round of the burst figure.</summary>
    public List<RegistrationResult> BurstRounds { get; } = [];

    /// <summary>The same on node A while node B, on the same machine, follows every change (no target).</summary>
    public RegistrationResult? RegistrationFollowed { get; set; }

    public HeartbeatResult? Heartbeats { get; set; }

    public List<FanOutResult> FanOut { get; } = [];

    public IdleResult? Idle { get; set; }

    public CrossNodeResult? CrossNode { get; set; }

    public ColdStartResult? ColdStart { get; set; }

    public OverlapResult? Overlap { get; set; }

    /// <summary>Access control Required (a token per load client) against Open, in the same run.</summary>
    public AuthComparisonResult? Auth { get; set; }

    /// <summary>A node's first seconds next to the same node warmed.</summary>
    public ColdWorkResult? ColdWork { get; set; }

    /// <summary>Tens of thousands of polls parked on one node.</summary>
    public ScaleResult? Scale { get; set; }

    /// <summary>Sessions held open on one node; a reset session's subscribers woken.</summary>
    public SessionResult? Sessions { get; set; }

    /// <summary>etcd on the same machine, driven by the same generator.</summary>
    public EtcdResult? Etcd { get; set; }

    /// <summary>The median of <see cref="PgBenchUpsertRounds"/> by rate.</summary>
    public PgBenchResult? PgBenchUpsert { get; set; }

    /// <summary>The pgbench upsert run after each registration round.</summary>
    public List<PgBenchResult> PgBenchUpsertRounds { get; } = [];

    /// <summary>pgbench's upsert at other client counts, once each: where its best is on this machine.</summary>
    public List<PgBenchResult> PgBenchUpsertSweep { get; } = [];

    /// <summary>
    /// The rate the burst is judged against: pgbench's median at <see cref="RunSettings.Concurrency"/>
    /// clients, or a higher single run at another client count.
    /// </summary>
    public double? PgBenchUpsertBest =>
        PgBenchUpsert is { } median ? PgBenchUpsertSweep.Select(r => r.TransactionsPerSecond).Append(median.TransactionsPerSecond).Max() : null;

    public PgBenchResult? PgBenchUpdate { get; set; }

    public List<TargetCheck> Targets { get; } = [];

    public List<string> Notes { get; } = [];
}

public sealed record RunSettings(
    bool Smoke, string Target, string Database, int Concurrency, double WarmUpSeconds, int Registrations, int RegistrationRounds, int BurstConcurrency, int HeartbeatInstances,
    int HeartbeatTtlSeconds, double HeartbeatSeconds, IReadOnlyList<int> FanOutConsumers, double IdleSeconds,
    int CrossNodeRounds, int CrossNodeConsumers, int ColdStartInstances, int OverlapInstances, int OverlapSubscriptions, bool Fsync, string StatementSource,
    IReadOnlyDictionary<string, string> NodeEnvironment);

/// <summary>
/// Database work in a window. <c>Statements</c> is the sum of pg_stat_statements <c>calls</c>
/// (every top-level statement, the probe's own excluded), null when the extension is not
/// loaded; <c>Transactions</c> is pg_stat_database xact_commit + xact_rollback, which
/// backends report with up to a second's delay (longer when idle).
/// </summary>
public sealed record DatabaseWork(long? Statements, long Transactions, long RowsInserted, long RowsUpdated, long RowsDeleted, double Seconds)
{
    public double? StatementsPerSecond => Statements is { } s && Seconds > 0 ? Math.Round(s / Seconds, 1) : null;

    public double TransactionsPerSecond => Seconds > 0 ? Math.Round(Transactions / Seconds, 1) : 0;
}

/// <summary><c>Cpu</c>: who used the machine's cores meanwhile.</summary>
public sealed record RegistrationResult(
    int Count, int Errors, int Concurrency, double Seconds, double PerSecond, Distribution LatencyMs, DatabaseWork Database, CpuUse Cpu);

public sealed record HeartbeatResult(
    int Instances, int Sent, int Errors, int Concurrency, double Seconds, double PerSecond, Distribution LatencyMs, DatabaseWork Database, CpuUse Cpu);

/// <summary>
/// CPU seconds over one timed phase: the node the requests went to, the other node when one was
/// running (it reloads what changed), this tool as the load generator, and PostgreSQL (the
/// private cluster's processes). A figure is null when it is not a process this tool can read.
/// </summary>
public sealed record CpuUse(double? NodeSeconds, double? OtherNodeSeconds, double GeneratorSeconds, double? DatabaseSeconds)
{
    public string Describe(double seconds) => string.Create(
        System.Globalization.CultureInfo.InvariantCulture,
        $"CPU-s in {seconds:0.0} s: node {(NodeSeconds is { } node ? node : "not measured")}{(OtherNodeSeconds is { } other ? $", other node {other}" : "")}, load generator {GeneratorSeconds}{(DatabaseSeconds is { } database ? $", PostgreSQL {database}" : "")}");
}

/// <summary>
/// One fan-out. <c>ChangeAcknowledgedMs</c> is the change's own request (group commit, reload);
/// <c>NodeCpuMs</c> and <c>GeneratorCpuMs</c> are the CPU the node and this tool used from the
/// change until the last answer: on a small machine they show who the answers waited for.
/// <c>GeneratorGcPauseMs</c>: this tool's own GC pauses meanwhile, during which it could not
/// take answers (their delays then include the pause).
/// </summary>
public sealed record FanOutResult(
    int Consumers, int Answered, int Missed, int Errors, Distribution DelayMs, double MinDelayMs, double ChangeAcknowledgedMs,
    double? NodeCpuMs, double GeneratorCpuMs, double GeneratorGcPauseMs, double SecondsToPark, string Histogram)
{
    /// <summary>Kept for the chart; not serialised (thousands of numbers).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<double> Delays { get; init; } = [];
}

public sealed record ProcessSample(long RssBytes, double CpuSeconds);

public sealed record IdleResult(
    int Consumers, double Seconds, long RssBeforeBytes, long RssParkedBytes, double BytesPerPoll,
    double CpuPercentOfOneCoreBaseline, double CpuPercentOfOneCoreParked, DatabaseWork Baseline, DatabaseWork Parked,
    IReadOnlyList<StatementCalls> ParkedStatements);

/// <summary>How often one statement (normalised by pg_stat_statements) ran in a window.</summary>
public sealed record StatementCalls(string Statement, long Calls);

public sealed record CrossNodeResult(int Rounds, int Samples, int Missed, Distribution DelayMs);

/// <summary>
/// Subscriptions that each name one big application and a provider of their own, parked on one
/// node. RSS is read once the first is parked and once all are. <c>NodeCpuMsPerAnswer</c>: the
/// node's CPU for immediate answers to these subscriptions, divided by their number. The change
/// is one registration to the big application: the node's CPU until it is acknowledged and until
/// every parked subscription has its new answer (which includes writing each of them), and its
/// latency next to registrations to an unrelated application while the same polls are parked.
/// <c>RssAnsweredBytes</c>: RSS once every answer has been received (the answers' writes included).
/// <c>RecomputeMs</c>: what the node's <c>registry.answers.recompute_duration</c> grew by over the
/// change (null when the node does not export it). <c>RecomputeMsPerChange</c>: the same for that change and the
/// changes after it, each made with every subscription parked again (empty when not measured).
/// </summary>
public sealed record OverlapResult(
    int Instances, long AnswerBytes, int Subscriptions, int Answered, int Missed, long RssFirstParkedBytes, long RssAllParkedBytes,
    int ImmediateAnswers, double NodeCpuMsPerAnswer, double ChangeNodeCpuMsAcknowledged, double ChangeNodeCpuMsAllAnswered,
    double ChangeAcknowledgedMs, Distribution UsualRegistrationMs, Distribution DelayMs, long RssAnsweredBytes, double? RecomputeMs = null)
{
    public IReadOnlyList<double> RecomputeMsPerChange { get; init; } = [];
}

public sealed record ColdStartResult(int Instances, double SecondsToListen, double SecondsToServeAll, long RssBytesServing, long RssBytesSettled);

/// <summary><c>DatabaseCpuSeconds</c>: what the private cluster used during the run (null for another database).</summary>
public sealed record PgBenchResult(
    string Script, int Clients, double Seconds, double TransactionsPerSecond, double LatencyAverageMs, long Failed, double? DatabaseCpuSeconds);

/// <summary>
/// etcd's figures: registrations (medians of the rounds, at the same concurrency) through v2
/// (PUT with a TTL) and v3 (put with a lease granted beforehand, one per load client),
/// heartbeats (v2 TTL refresh, v3 lease keep-alive, one lease per instance) and fan-out.
/// </summary>
public sealed record EtcdResult(
    string Version, RegistrationResult RegistrationV2, RegistrationResult RegistrationV3, IReadOnlyList<RegistrationResult> RegistrationV2Rounds,
    IReadOnlyList<RegistrationResult> RegistrationV3Rounds, HeartbeatResult HeartbeatsV2, HeartbeatResult HeartbeatsV3, IReadOnlyList<EtcdFanOut> FanOut);

/// <summary>One fan-out through one of etcd's APIs; <c>BytesPerWatcher</c> is etcd's RSS growth with the watchers parked over their number.</summary>
public sealed record EtcdFanOut(string Api, FanOutResult FanOut, long RssBeforeBytes, long RssParkedBytes, double BytesPerWatcher);

/// <summary>
/// A fresh node's first <c>WindowSeconds</c> of serving (from ready: a fan-out, then
/// registrations until the window ends; <c>SecondsToReady</c> from process start) and the same fan-out and registrations on it warmed.
/// </summary>
public sealed record ColdWorkResult(
    double SecondsToReady, double WindowSeconds, FanOutResult FirstFanOut, FanOutResult WarmFanOut, RegistrationResult FirstRegistrations, RegistrationResult WarmRegistrations,
    IReadOnlyDictionary<string, string> NodeEnvironment);

/// <summary>Polls parked on one node from <c>SourceAddresses</c> loopback addresses, with the open-file limits the generator and the node had.</summary>
public sealed record ScaleResult(int Asked, int Consumers, int SourceAddresses, ulong GeneratorFileLimit, ulong NodeFileLimit, FanOutResult FanOut, IdleResult Idle);

/// <summary>The auth comparison: its figures (medians of the rounds) and every round.</summary>
public sealed record AuthComparisonResult(int Tokens, int Rounds, IReadOnlyList<AuthFigure> Figures, IReadOnlyList<AuthRound> RoundsRun);

/// <summary>
/// One figure with access control off and on (medians of the rounds); <c>Cost</c> is how many
/// times worse it is with it on (off/on for rates, on/off for delays): 1.05 is 5% worse.
/// </summary>
public sealed record AuthFigure(string Figure, double Off, double On, double Cost, IReadOnlyList<double> OffRounds, IReadOnlyList<double> OnRounds);

public sealed record AuthRound(int Round, string Mode, RegistrationResult Registration, HeartbeatResult Heartbeats, IReadOnlyList<FanOutResult> FanOut);

public sealed record TargetCheck(string Figure, string Target, string Measured, bool? Met, string Note);
