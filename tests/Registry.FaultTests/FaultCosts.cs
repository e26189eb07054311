using System.Globalization;
using System.Text;

namespace Registry.FaultTests;

/// <summary>What one injected fault cost the clients: how long writes through a node were refused, and how stale reads were.</summary>
public sealed record FaultCost(FaultEvent Fault, TimeSpan WritesRefused, TimeSpan? ReadsStale, bool StaleBeyondLimit);

/// <summary>Measures each fault's cost from the history (the probes' writes and staleness samples).</summary>
public static class FaultCosts
{
    /// <summary>How long after a fault ends its effects are still attributed to it (bounded by the next fault).</summary>
    private static readonly TimeSpan Aftermath = TimeSpan.FromSeconds(10);

    public static List<FaultCost> Measure(History history)
    {
        var faults = history.Faults.OrderBy(f => f.Started).ToList();
        var writes = history.Ops
            // The probes write through their own node only, retrying every 200 ms after a refusal.
            .Where(o => o.Kind == OpKind.Register && o.Client.StartsWith("probe", StringComparison.Ordinal))
            .OrderBy(o => o.Invoked)
            .ToList();
        var costs = new List<FaultCost>();
        for (var f = 0; f < faults.Count; f++)
        {
            var fault = faults[f];
            var until = f + 1 < faults.Count ? Min(faults[f + 1].Started, fault.Ended + Aftermath) : fault.Ended + Aftermath;
            var refused = TimeSpan.Zero;
            foreach (var node in writes.Where(o => o.Invoked >= fault.Started && o.Invoked < until).GroupBy(o => o.Node))
            {
                DateTimeOffset? streak = null;
                foreach (var op in node)
                {
                    if (op.Outcome == Outcome.Unknown)
                    {
                        streak ??= op.Invoked;
                        if (op.Completed - streak.Value > refused)
                        {
                            refused = op.Completed - streak.Value;
                        }
                    }
                    else if (op.Outcome == Outcome.Acknowledged && streak is { } began)
                    {
                        if (op.Invoked - began > refused)
                        {
                            refused = op.Invoked - began;
                        }

                        streak = null;
                    }
                }
            }

            var samples = history.Staleness.Where(s => s.Written >= fault.Started && s.Written < until).ToList();
            var beyond = samples.Any(s => s.Lag is null);
            var stale = samples.Where(s => s.Lag is not null).Select(s => s.Lag!.Value).DefaultIfEmpty().Max();
            costs.Add(new FaultCost(fault, refused, samples.Count == 0 ? null : stale, beyond));
        }

        return costs;
    }

    /// <summary>A Markdown table per fault kind, and the staleness outside faults for comparison.</summary>
    public static string Table(IReadOnlyList<FaultCost> costs, History history)
    {
        var text = new StringBuilder();
        text.AppendLine("| fault | injected | writes refused (max, through one node) | reads stale (max lag of an acknowledged write on a node) |");
        text.AppendLine("|---|---|---|---|");
        foreach (var kind in costs.GroupBy(c => c.Fault.Kind).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var refused = kind.Max(c => c.WritesRefused);
            var stale = kind.Select(c => c.ReadsStale).Where(s => s is not null).Select(s => s!.Value).DefaultIfEmpty().Max();
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| {kind.Key} | {kind.Count()} | {Seconds(refused)} | {Seconds(stale)}{(kind.Any(c => c.StaleBeyondLimit) ? " (some not within 10 s)" : "")} |");
        }

        var windows = history.Faults.Select(f => (f.Started, End: f.Ended + Aftermath)).ToList();
        var quiet = history.Staleness.Where(s => s.Lag is not null && !windows.Any(w => s.Written >= w.Started && s.Written < w.End))
            .Select(s => s.Lag!.Value.TotalMilliseconds).Order().ToList();
        if (quiet.Count > 0)
        {
            text.AppendLine(CultureInfo.InvariantCulture,
                $"| (no fault) | {quiet.Count} samples | - | p50 {quiet[quiet.Count / 2]:F0} ms, p99 {quiet[(int)(quiet.Count * 0.99)]:F0} ms |");
        }

        return text.ToString();
    }

    private static string Seconds(TimeSpan value) => value == TimeSpan.Zero ? "0" : string.Create(CultureInfo.InvariantCulture, $"{value.TotalSeconds:F1} s");

    private static DateTimeOffset Min(DateTimeOffset a, DateTimeOffset b) => a < b ? a : b;
}
