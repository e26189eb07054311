using System.Diagnostics.Metrics;

namespace Registry.Telemetry;

/// <summary>
/// The registry's instruments (meter <c>Registry</c>), exported at <c>/metrics</c>.
/// Counting is a few atomic adds; nothing here allocates per parked poll.
/// </summary>
internal sealed class RegistryMetrics
{
    public const string MeterName = "Registry";

    private readonly Counter<long> _registrations;
    private readonly Counter<long> _unregistrations;
    private readonly Counter<long> _heartbeatsReceived;
    private readonly Counter<long> _heartbeatsWritten;
    private readonly Counter<long> _evictions;
    private readonly UpDownCounter<long> _parkedPolls;
    private readonly UpDownCounter<long> _answersWaiting;
    private readonly Counter<long> _wakeUps;
    private readonly Histogram<double> _deliveryDelay;
    private readonly Counter<long> _notifications;
    private readonly Counter<long> _reloads;
    private readonly Counter<long> _reconnects;
    private readonly Counter<long> _databaseErrors;
    private readonly Counter<long> _answersChanged;
    private readonly Histogram<double> _recomputeDuration;
    private readonly Counter<long> _writeBatches;
    private readonly UpDownCounter<long> _writesQueued;
    private readonly Counter<long> _sweeps;
    private readonly Counter<long> _livenessMarks;
    private readonly Counter<long> _limitsReached;
    private readonly Counter<long> _probes;
    private readonly Counter<long> _probeEvictions;
    private readonly Histogram<double> _probeDuration;
    private readonly Histogram<double> _probeLateness;
    private int _probesOwned;
    private int _probesWithdrawn;
    private int _views;
    private long _viewBytes;
    private int _selfPreservation;

    public RegistryMetrics(IMeterFactory meters, string meterName = MeterName)
    {
        var meter = meters.Create(meterName);
        _registrations = meter.CreateCounter<long>("registry.registrations", "{registration}", "Registrations committed, by result (created, replaced).");
        _unregistrations = meter.CreateCounter<long>("registry.unregistrations", "{unregistration}", "Unregistrations, by result (removed, not_found).");
        _heartbeatsReceived = meter.CreateCounter<long>("registry.heartbeats.received", "{heartbeat}", "Heartbeats answered, by result (renewed, unknown, refused).");
        _heartbeatsWritten = meter.CreateCounter<long>("registry.heartbeats.written", "{renewal}", "Lease renewals written to the database.");
        _evictions = meter.CreateCounter<long>("registry.evictions", "{instance}", "Instances removed because their lease ran out.");
        _parkedPolls = meter.CreateUpDownCounter<long>("registry.polls.parked", "{poll}", "Long polls held open now.");
        _answersWaiting = meter.CreateUpDownCounter<long>("registry.answers.waiting", "{answer}", "Large answers waiting for a turn to be written (Registry:Subscriptions:LargeAnswerWriters).");
        _wakeUps = meter.CreateCounter<long>("registry.polls.completed", "{poll}", "Long polls answered, by reason (changed, timeout, shutdown).");
        _deliveryDelay = meter.CreateHistogram<double>("registry.polls.delivery_delay", "ms", "From a parked poll's wake-up signal to its answer being written.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000] });
        _notifications = meter.CreateCounter<long>("registry.changefeed.notifications", "{notification}", "Change notifications received.");
        _reloads = meter.CreateCounter<long>("registry.changefeed.reloads", "{reload}", "Reloads from the database, by scope (application, all).");
        _reconnects = meter.CreateCounter<long>("registry.changefeed.reconnects", "{reconnect}", "Times the change feed connected again after losing its connection.");
        _databaseErrors = meter.CreateCounter<long>("registry.database.errors", "{error}", "Database operations that failed, by operation.");
        _answersChanged = meter.CreateCounter<long>("registry.answers.changed", "{answer}", "Subscription answers recomputed with a new version.");
        _recomputeDuration = meter.CreateHistogram<double>("registry.answers.recompute_duration", "ms",
            "Time the loader spent recomputing the fragments and answers one change touched (its writes already answered, its consumers not yet woken).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250] });
        _writeBatches = meter.CreateCounter<long>("registry.writes.batches", "{transaction}", "Group-committed write transactions.");
        _writesQueued = meter.CreateUpDownCounter<long>("registry.writes.queued", "{write}", "Registrations and unregistrations waiting for a batch to take them.");
        _sweeps = meter.CreateCounter<long>("registry.sweeps", "{sweep}", "Sweeper rounds, by outcome (idle: nothing can have expired, so no statement; locked_out; grace_owed: waiting for a node to write its renewals and extend the leases; swept), and grace: leases extended after the cluster could not record renewals.");
        _limitsReached = meter.CreateCounter<long>("registry.limits.rejections", "{request}", "Requests refused with 429 at a node's limit, by limit (parked, parked_per_client, writes_per_client, subscriptions, subscription_characters, subscription_bytes, drain_questions_per_client), and connections closed at once past a client's (connections_per_client).");
        _livenessMarks = meter.CreateCounter<long>("registry.liveness.marks", "{mark}", "Times this node marked itself alive in the database (the grace rule reads the newest mark of any node).");
        _probes = meter.CreateCounter<long>("registry.probes", "{probe}", "Probes this node ran, by kind (http, https, tcp) and result (passed, failed).");
        _probeEvictions = meter.CreateCounter<long>("registry.probes.evictions", "{instance}", "Instances whose probes failed Registry:Probes:FailuresToEvict times in a row, handed to the sweeper for eviction.");
        _probeDuration = meter.CreateHistogram<double>("registry.probes.duration", "ms", "How long a probe took, pass or fail.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000] });
        _probeLateness = meter.CreateHistogram<double>("registry.probes.lateness", "ms", "How long after it was due a probe started (a node short of capacity shows here first).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000] });
        meter.CreateObservableGauge("registry.probes.owned", () => Volatile.Read(ref _probesOwned), "{instance}", "Probed instances this node owns now.");
        meter.CreateObservableGauge("registry.probes.withdrawn", () => Volatile.Read(ref _probesWithdrawn), "1",
            "1 while this node, its probes nearly all failing while another node's pass, leaves its share of probing to the others (Registry:Probes:SuspectSelfBelow).");
        meter.CreateObservableGauge("registry.subscriptions.distinct", () => Volatile.Read(ref _views), "{subscription}", "Distinct subscriptions held in memory.");
        meter.CreateObservableGauge("registry.subscriptions.bytes", () => Volatile.Read(ref _viewBytes), "By",
            "Serialised endpoints the distinct subscriptions keep, each run counted once however many share it (Registry:Limits:MaxSubscriptionBytes).");
        meter.CreateObservableGauge("registry.selfpreservation.engaged", () => Volatile.Read(ref _selfPreservation), "1", "1 while self-preservation rate-limits evictions.");
    }

    public void Registered(bool created) => _registrations.Add(1, new KeyValuePair<string, object?>("result", created ? "created" : "replaced"));

    public void Unregistered(bool removed) => _unregistrations.Add(1, new KeyValuePair<string, object?>("result", removed ? "removed" : "not_found"));

    public void HeartbeatReceived(bool known) => _heartbeatsReceived.Add(1, new KeyValuePair<string, object?>("result", known ? "renewed" : "unknown"));

    /// <summary>A heartbeat refused (503) because this node could not record renewals.</summary>
    public void HeartbeatRefused() => _heartbeatsReceived.Add(1, new KeyValuePair<string, object?>("result", "refused"));

    public void LivenessMarked() => _livenessMarks.Add(1);

    public void LimitReached(string limit) => _limitsReached.Add(1, new KeyValuePair<string, object?>("limit", limit));

    public void HeartbeatsWritten(int count) => _heartbeatsWritten.Add(count);

    public void Evicted(int count) => _evictions.Add(count);

    public void PollParked() => _parkedPolls.Add(1);

    public void PollUnparked() => _parkedPolls.Add(-1);

    /// <summary>A large answer starts (+1) or stops (-1) waiting for its turn to be written.</summary>
    public void AnswerWaiting(int delta) => _answersWaiting.Add(delta);

    public void PollCompleted(string reason) => _wakeUps.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void DeliveryDelay(TimeSpan delay) => _deliveryDelay.Record(delay.TotalMilliseconds);

    public void NotificationReceived() => _notifications.Add(1);

    public void Reloaded(bool all) => _reloads.Add(1, new KeyValuePair<string, object?>("scope", all ? "all" : "application"));

    public void Reconnected() => _reconnects.Add(1);

    public void DatabaseError(string operation) => _databaseErrors.Add(1, new KeyValuePair<string, object?>("operation", operation));

    public void AnswerChanged() => _answersChanged.Add(1);

    public void AnswersRecomputed(TimeSpan took) => _recomputeDuration.Record(took.TotalMilliseconds);

    public void WriteBatch() => _writeBatches.Add(1);

    public void WritesQueued(int change) => _writesQueued.Add(change);

    public void Swept(string outcome) => _sweeps.Add(1, new KeyValuePair<string, object?>("outcome", outcome));

    public void SubscriptionViews(int count) => Volatile.Write(ref _views, count);

    public void SubscriptionBytes(long bytes) => Volatile.Write(ref _viewBytes, bytes);

    public void SelfPreservation(bool engaged) => Volatile.Write(ref _selfPreservation, engaged ? 1 : 0);

    public void Probed(string kind, bool passed, TimeSpan duration)
    {
        _probes.Add(1, new KeyValuePair<string, object?>("kind", kind), new KeyValuePair<string, object?>("result", passed ? "passed" : "failed"));
        _probeDuration.Record(duration.TotalMilliseconds);
    }

    public void ProbeLate(TimeSpan lateness) => _probeLateness.Record(lateness.TotalMilliseconds);

    public void ProbeEvicted() => _probeEvictions.Add(1);

    public void ProbesOwned(int count) => Volatile.Write(ref _probesOwned, count);

    public void ProbesWithdrawn(bool withdrawn) => Volatile.Write(ref _probesWithdrawn, withdrawn ? 1 : 0);
}
