using Microsoft.Extensions.Options;
using Registry.Leases;
using Registry.Membership;
using Registry.Model;

namespace Registry.Probes;

/// <summary>
/// How one instance is probed: <c>http</c>, <c>https</c> or <c>tcp</c>; the path for the first two; every so many
/// seconds; for as long as the registry token that asked for it (<paramref name="Credential"/>, its id) is valid.
/// </summary>
internal sealed record ProbeSpec(string Kind, string? Path, int IntervalSeconds, string? Credential = null)
{
    public const string Http = "http";
    public const string Https = "https";
    public const string Tcp = "tcp";

    public ProbeDocument ToDocument() => new() { Kind = Kind, Path = Path, Interval = IntervalSeconds };
}

/// <summary>Reads and checks the probe parameters of a registration.</summary>
internal sealed class ProbeRequests(ProbeNetworks networks, IOptions<ProbeOptions> options, IOptions<MembershipOptions> membership, IOptions<LeaseOptions> leases)
{
    /// <summary>
    /// The probe a registration asks for (null for none), or errors naming the parameter.
    /// Without <c>probe</c> the registration turns probing off.
    /// </summary>
    public ProbeSpec? Read(string? probe, string? path, string? interval, Errors errors)
    {
        if (probe is null)
        {
            if (path is not null)
            {
                errors.Add("probePath", "applies only together with probe");
            }

            if (interval is not null)
            {
                errors.Add("probeInterval", "applies only together with probe");
            }

            return null;
        }

        if (probe is not (ProbeSpec.Http or ProbeSpec.Https or ProbeSpec.Tcp))
        {
            errors.Add("probe", "must be http, https or tcp");
            return null;
        }

        if (!networks.Enabled)
        {
            errors.Add("probe", "probing is off on this registry (Registry:Probes:AllowedNetworks lists no networks)");
            return null;
        }

        var seconds = QueryNumber.Read(interval, "probeInterval", 1, errors);
        if (probe == ProbeSpec.Tcp && path is not null)
        {
            errors.Add("probePath", "applies only to http and https probes");
        }
        else if (path is not null && PathProblem(path) is { } problem)
        {
            errors.Add("probePath", problem);
        }

        return errors.Any
            ? null
            : new ProbeSpec(probe, probe == ProbeSpec.Tcp ? null : path ?? "/", (int)Math.Min(seconds ?? options.Value.DefaultIntervalSeconds, options.Value.MaxIntervalSeconds));
    }

    /// <summary>
    /// The shortest lease a probed instance is given, in seconds: twice <c>FailuresToEvict + 1</c>
    /// intervals. Passing probes renew it as heartbeats do, and such a renewal is written only once
    /// less than half of the lease is left, so after a passing probe only a little over half of it
    /// may remain; that half must outlast <c>FailuresToEvict - 1</c> failed probes (each may take
    /// its whole interval to time out), the next passing one and its write. With a shorter lease
    /// fewer failures than <c>FailuresToEvict</c> let it run out and the sweeper evicts a provider
    /// that is only briefly slow. Half of it also outlasts a change of prober when the probing node
    /// dies: the others count it gone <see cref="MembershipOptions.NodeTimeout"/> after its last mark
    /// and confirm that at their next read (two <see cref="MembershipOptions.RefreshInterval"/>s), and
    /// the new prober's first probe and its write may take two intervals more. With probes every
    /// second that is 7 s, longer than half of the 8 s lease the first rule gives, and a dead node's
    /// share could be evicted while healthy. So does a change of prober when the probing node finds
    /// itself cut off from the instances (ProbeScheduler.JudgeSelf) and judges its own probes over
    /// an interval: an interval since the last passing probe, one more and a probe's timeout for its
    /// probes to fail, the judgement, a mark of another node and a read of it to confirm that the
    /// fault is its own, its judgement, its own mark and the others' read of it (which may come a
    /// read apart), the new prober's first probe and its write, and a second for the loops' ticks and
    /// the database. (A node that must look further back for enough probes to judge, its share at
    /// the shortest interval being small, decides later, and its instances probed most often may
    /// then run short in that change.)
    /// </summary>
    public long LeaseSeconds(ProbeSpec spec)
    {
        var interval = TimeSpan.FromSeconds(spec.IntervalSeconds);
        var (marks, reads) = (leases.Value.LivenessInterval, membership.Value.RefreshInterval);
        var moving = membership.Value.NodeTimeout + 2 * reads + 2 * interval;
        var withdrawing = 3 * interval + TimeSpan.FromSeconds(options.Value.TimeoutFor(spec.IntervalSeconds))
            + 2 * marks + 3 * reads + 3 * ProbeScheduler.JudgementInterval + leases.Value.RenewalInterval + TimeSpan.FromSeconds(1);
        var handover = moving > withdrawing ? moving : withdrawing;
        return Math.Max(2L * (options.Value.FailuresToEvict + 1) * spec.IntervalSeconds, 2L * (long)Math.Ceiling(handover.TotalSeconds));
    }

    /// <summary>Null when a probe may reach the host of <paramref name="addr"/>; otherwise the rule it breaks.</summary>
    public async Task<string?> RefusalAsync(string addr, CancellationToken cancellationToken)
    {
        // A name whose DNS server does not answer must not hold the registration for as long as the resolver retries.
        var host = ProbeAddress.Host(addr);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(options.Value.TimeoutSeconds));
        try
        {
            return (await networks.ResolveAsync(host, deadline.Token, registering: true)).Refusal;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return $"{host} did not resolve within {options.Value.TimeoutSeconds} s (Registry:Probes:TimeoutSeconds)";
        }
    }

    private string? PathProblem(string path)
    {
        if (path.Length > options.Value.MaxPathLength)
        {
            return $"must be at most {options.Value.MaxPathLength} characters";
        }

        // An origin-form request target (RFC 9110): no scheme or host can be smuggled in.
        return path.StartsWith('/') && !path.StartsWith("//", StringComparison.Ordinal) && path.All(IsPathCharacter)
            ? null
            : "must be a path starting with a single / and holding only URL characters (letters, digits, -._~!$&'()*+,;=:@/?%)";
    }

    private static bool IsPathCharacter(char c) => char.IsAsciiLetterOrDigit(c) || "-._~!$&'()*+,;=:@/?%".Contains(c, StringComparison.Ordinal);
}

/// <summary>The parts of an <c>addr</c> (<c>host:port</c>, IPv6 bracketed), which the request rules have already checked.</summary>
internal static class ProbeAddress
{
    public static string Host(string addr) => addr[..addr.LastIndexOf(':')].Trim('[', ']');

    public static int Port(string addr) => int.Parse(addr.AsSpan(addr.LastIndexOf(':') + 1), System.Globalization.CultureInfo.InvariantCulture);
}
