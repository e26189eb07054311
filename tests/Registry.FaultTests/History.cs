using System.Collections.Concurrent;
using System.Globalization;
using System.Text;

namespace Registry.FaultTests;

public enum OpKind
{
    Register,
    Heartbeat,
    Unregister,
    Poll,
}

/// <summary>How an operation ended, as far as the client can know.</summary>
public enum Outcome
{
    /// <summary>2xx: the registry promised it.</summary>
    Acknowledged,

    /// <summary>A definite refusal (4xx): nothing was done.</summary>
    Refused,

    /// <summary>503, a cut connection, a timeout: it may or may not have committed.</summary>
    Unknown,
}

/// <summary>One client operation with its answer and times (client clock = database clock: one machine).</summary>
public sealed class Op
{
    public required long Id { get; init; }

    public required string Client { get; init; }

    public required OpKind Kind { get; init; }

    public required int Node { get; init; }

    public required string Application { get; init; }

    public string Addr { get; init; } = "";

    /// <summary>The unique write id carried in <c>meta.w</c>, which makes each registration recognisable in the table's row history.</summary>
    public string? Write { get; init; }

    public int? Ttl { get; init; }

    public required DateTimeOffset Invoked { get; init; }

    public DateTimeOffset Completed { get; set; }

    public int Status { get; set; }

    /// <summary>The <c>expires</c> a register or heartbeat answer promised.</summary>
    public DateTimeOffset? Expires { get; set; }

    public string? Error { get; set; }

    public Outcome Outcome => Status switch
    {
        >= 200 and < 300 => Outcome.Acknowledged,
        >= 400 and < 500 and not 408 and not 429 => Outcome.Refused,
        _ => Outcome.Unknown,
    };

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture,
            $"#{Id} {Time(Invoked)}..{Time(Completed)} {Client} {Kind} node{Node} {Application}/{Addr}{(Write is null ? "" : $" w={Write}")}{(Ttl is null ? "" : $" ttl={Ttl}")} -> {(Status == 0 ? "no answer" : Status.ToString(CultureInfo.InvariantCulture))}{(Expires is null ? "" : $" expires={Time(Expires.Value)}")}{(Error is null ? "" : $" ({Error})")}");

    public static string Time(DateTimeOffset at) => at.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture);
}

/// <summary>A fault as injected: what, where, from when to when.</summary>
public sealed record FaultEvent(string Kind, string Target, DateTimeOffset Started, DateTimeOffset Ended, string Detail)
{
    public override string ToString() => $"{Op.Time(Started)}..{Op.Time(Ended)} FAULT {Kind} {Target} {Detail}";
}

/// <summary>One change of an <c>instances</c> row as the test's trigger recorded it in the database.</summary>
public sealed record RowEvent(long Id, DateTimeOffset At, char Change, string Kind, string Application, string Protocol, string Addr, string? Write, DateTimeOffset? OldExpires, DateTimeOffset? NewExpires, long Transaction)
{
    public override string ToString() =>
        $"{Op.Time(At)} ROW {Change} by {Kind} (tx {Transaction}) {Application}/{Addr}{(Write is null ? "" : $" w={Write}")} expires {(OldExpires is { } o ? Op.Time(o) : "-")} -> {(NewExpires is { } n ? Op.Time(n) : "-")}";
}

/// <summary>A notification the test's own LISTEN session received.</summary>
public sealed record Notice(DateTimeOffset At, string Application, string[]? Addrs);

/// <summary>What a consumer was last answered.</summary>
public sealed record ConsumerAnswer(DateTimeOffset At, string Version, IReadOnlyList<Endpoint> Endpoints);

/// <summary>An endpoint with its meta in a canonical form (sorted pairs), comparable across sources.</summary>
public sealed record Endpoint(string Application, string Protocol, string Addr, string Meta)
{
    public override string ToString() => $"{Application}/{Protocol}/{Addr} {Meta}";
}

/// <summary>Everything recorded during a run, shared by the clients, the fault injector and the checker.</summary>
public sealed class History
{
    private long _next;

    public ConcurrentQueue<Op> Ops { get; } = new();

    public ConcurrentQueue<FaultEvent> Faults { get; } = new();

    public ConcurrentQueue<Notice> Notices { get; } = new();

    /// <summary>Times the test's own LISTEN session was not connected (notifications may be missed then).</summary>
    public ConcurrentQueue<(DateTimeOffset From, DateTimeOffset To)> ListenerGaps { get; } = new();

    /// <summary>How long after a probe write each node served it (reads stale), or null when it did not within the limit.</summary>
    public ConcurrentQueue<(DateTimeOffset Written, int Node, TimeSpan? Lag)> Staleness { get; } = new();

    /// <summary>Broken promises seen while the run was still going (checked where the fault leaves nothing else to blame).</summary>
    public ConcurrentQueue<Violation> Violations { get; } = new();

    public Op Begin(string client, OpKind kind, int node, string application, string addr = "", string? write = null, int? ttl = null) => new()
    {
        Id = Interlocked.Increment(ref _next),
        Client = client,
        Kind = kind,
        Node = node,
        Application = application,
        Addr = addr,
        Write = write,
        Ttl = ttl,
        Invoked = DateTimeOffset.UtcNow,
    };

    public void End(Op op, int status, DateTimeOffset? expires = null, string? error = null)
    {
        op.Completed = DateTimeOffset.UtcNow;
        op.Status = status;
        op.Expires = expires;
        op.Error = error;
        Ops.Enqueue(op);
    }

    /// <summary>The whole history as text, ordered by time (written next to the test results).</summary>
    public string Dump(IEnumerable<RowEvent> rows)
    {
        var lines = Ops.Select(o => (o.Invoked, o.ToString()))
            .Concat(Faults.Select(f => (f.Started, f.ToString())))
            .Concat(rows.Select(r => (r.At, r.ToString())))
            .Concat(Staleness.Select(s => (s.Written, $"{Op.Time(s.Written)} PROBE write seen on node{s.Node} {(s.Lag is { } lag ? $"after {lag.TotalMilliseconds:F0} ms" : "not within 10 s")}")))
            .OrderBy(l => l.Item1)
            .Select(l => l.Item2);
        var text = new StringBuilder();
        foreach (var line in lines)
        {
            text.AppendLine(line);
        }

        return text.ToString();
    }
}
