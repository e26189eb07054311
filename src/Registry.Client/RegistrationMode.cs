using System.Globalization;

namespace Registry.Client;

/// <summary>How the registry is to know that a registered instance is alive.</summary>
public enum RegistrationKind
{
    /// <summary>The client renews the lease with heartbeats at about a third of the TTL.</summary>
    Heartbeat,

    /// <summary>The client holds a session (<c>POST /v1/sessions</c>): the instance lives as long as one open connection.</summary>
    Session,

    /// <summary>The registry probes the instance itself; the client registers once and sends nothing more.</summary>
    Probe,
}

/// <summary>What a registry probe checks (<c>probe=http|https|tcp</c>).</summary>
public enum ProbeKind
{
    /// <summary><c>GET</c> the address at the probe path over HTTP; a <c>2xx</c> passes.</summary>
    Http,

    /// <summary><c>GET</c> the address at the probe path over HTTPS; a <c>2xx</c> passes.</summary>
    Https,

    /// <summary>A TCP connection to the address that opens passes.</summary>
    Tcp,
}

/// <summary>
/// How a <see cref="RegistrationLease"/> keeps its instance registered: <see cref="Heartbeat"/> (the default),
/// <see cref="Session"/> (no heartbeats; a crashed process disappears in about a second) or
/// <see cref="Probe(ProbeKind, string?, TimeSpan?)"/> (the registry checks the instance; nothing is sent after registering).
/// </summary>
public sealed class RegistrationMode
{
    private RegistrationMode(RegistrationKind kind, ProbeKind probeKind = default, string? probePath = null, TimeSpan? probeInterval = null)
    {
        Kind = kind;
        ProbeKind = probeKind;
        ProbePath = probePath;
        ProbeInterval = probeInterval;
    }

    /// <summary>Heartbeats at about a third of the TTL; re-registers when the registry forgot the instance.</summary>
    public static RegistrationMode Heartbeat { get; } = new(RegistrationKind.Heartbeat);

    /// <summary>
    /// A session held open on one node. The lease is renewed by that node while the connection stays open; when
    /// it closes (the process exits or crashes) the instance is removed within a second. On a failure the session
    /// is opened again, with backoff, starting from the next server; when the registry ends it because the instance
    /// was unregistered or evicted it is opened again at once; when another registration of the same instance took
    /// over (<c>replaced</c>) the lease stops in <see cref="RegistryConnectionState.Replaced"/>.
    /// </summary>
    public static RegistrationMode Session { get; } = new(RegistrationKind.Session);

    /// <summary>Which of the three this is.</summary>
    public RegistrationKind Kind { get; }

    /// <summary>What the registry probes (for <see cref="RegistrationKind.Probe"/>).</summary>
    public ProbeKind ProbeKind { get; }

    /// <summary>The path an HTTP(S) probe gets; <see langword="null"/>: the registry's default (<c>/</c>).</summary>
    public string? ProbePath { get; }

    /// <summary>Time between probes; <see langword="null"/>: the registry's default (10 s).</summary>
    public TimeSpan? ProbeInterval { get; }

    /// <summary>
    /// The registry probes the instance itself (a registry with <c>Registry:Probes:AllowedNetworks</c> covering its
    /// address): the client registers once, retrying with backoff until it succeeds, and sends no heartbeats.
    /// Passing probes keep the lease; failing ones remove the instance, and the client does not register it
    /// again (its process is what failed; a restart registers it anew). Disposing the lease unregisters.
    /// </summary>
    /// <param name="kind">HTTP(S) <c>GET</c> or a TCP connect.</param>
    /// <param name="path">For HTTP(S): the path to get, starting with <c>/</c>; <see langword="null"/>: <c>/</c>.</param>
    /// <param name="interval">Time between probes, whole seconds, at least 1 s; <see langword="null"/>: the registry's default.</param>
    public static RegistrationMode Probe(ProbeKind kind, string? path = null, TimeSpan? interval = null)
    {
        if (!Enum.IsDefined(kind))
        {
            throw new ArgumentOutOfRangeException(nameof(kind), kind, "Not a probe kind.");
        }

        if (path is not null && (kind == ProbeKind.Tcp || !path.StartsWith('/')))
        {
            throw new ArgumentException("A probe path is for HTTP(S) probes and starts with '/'.", nameof(path));
        }

        if (interval is { } every && (every < TimeSpan.FromSeconds(1) || every.Ticks % TimeSpan.TicksPerSecond != 0))
        {
            throw new ArgumentOutOfRangeException(nameof(interval), interval, "A probe interval is a whole number of seconds, at least 1.");
        }

        return new(RegistrationKind.Probe, kind, path, interval);
    }

    /// <summary>The register call's query parameters after <c>ttl</c> (empty unless probing).</summary>
    internal string RegisterQuery()
    {
        if (Kind != RegistrationKind.Probe)
        {
            return "";
        }

        var query = $"&probe={ProbeKind.ToString().ToLowerInvariant()}";
        if (ProbePath is not null)
        {
            query += $"&probePath={Uri.EscapeDataString(ProbePath)}";
        }

        if (ProbeInterval is { } interval)
        {
            query += string.Create(CultureInfo.InvariantCulture, $"&probeInterval={(long)interval.TotalSeconds}");
        }

        return query;
    }

    /// <inheritdoc />
    public override string ToString() => Kind == RegistrationKind.Probe ? $"Probe({ProbeKind}{(ProbePath is null ? "" : " " + ProbePath)})" : Kind.ToString();
}
