using Microsoft.Extensions.Options;

namespace Registry.Client;

/// <summary>Settings of the registry client (configuration section <c>RegistryClient</c> with <c>AddRegistryClient</c>).</summary>
public sealed class RegistryClientOptions
{
    /// <summary>The configuration section bound by <c>AddRegistryClient</c>.</summary>
    public const string SectionName = "RegistryClient";

    /// <summary>
    /// Base URLs of the registry nodes, e.g. <c>http://registry-a:5080</c>. Requests go to the node
    /// that answered last and fail over to the next on a connection error, a timeout or a <c>5xx</c>.
    /// </summary>
    public IList<Uri> Servers { get; } = [];

    /// <summary>The lease asked for at registration; heartbeats are sent at about a third of it. Default 30 s.</summary>
    public TimeSpan Ttl { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long the registry may hold a long poll when nothing changes: 1 to 55 s (the registry's cap). Default 30 s.</summary>
    public TimeSpan PollWait { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Most time one register, heartbeat or unregister request may take on one node before the next is tried (a heartbeat: no more than a third of the TTL). Default 5 s.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long the hosted registration (<c>AddRegistryRegistration</c>) waits on shutdown for the registry to confirm that
    /// every consumer has been told the instance is gone (a drain), before the host stops serving: 1 to 60 s.
    /// <see cref="TimeSpan.Zero"/> unregisters without waiting. Default 10 s.
    /// </summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// For <see cref="RegistrationMode.Session"/>: how long a session's stream may stay silent before the client takes
    /// its node (or the path to it) for gone and opens the session elsewhere. The registry sends a keep-alive every
    /// <c>Registry:Sessions:KeepAliveSeconds</c> (5 s by default) and says so in the stream's <c>X-Registry-Keep-Alive</c>
    /// header; three of those are allowed when that is longer. Default 20 s.
    /// </summary>
    public TimeSpan SessionIdleTimeout { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Most time opening a connection to one node may take before the next is tried (set on the client's own
    /// <see cref="HttpClient"/> with dependency injection), so a black-holed node costs seconds, not the
    /// operating system's ~2 minutes of SYN retries. Default 3 s.
    /// </summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(3);

    /// <summary>
    /// Silence on a connection after which the operating system asks whether the node is still there (TCP keep-alive;
    /// set on the client's own <see cref="HttpClient"/> with dependency injection). A node whose host crashed or whose
    /// network was cut sends nothing: its held polls are then given up about 3 s after this, rather than after their
    /// whole wait, and the next node is asked. Whole seconds; default 5 s; zero leaves keep-alive off.
    /// </summary>
    public TimeSpan TcpKeepAlive { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// A registry token (<c>rgt_…</c>) sent as <c>Authorization: Bearer</c> on every request. For a token that
    /// rotates (a mounted secret, a projected service-account JWT) use <see cref="TokenProvider"/> instead.
    /// Never logged.
    /// </summary>
    public string? Token { get; set; }

    /// <summary>
    /// Gives the bearer token for each request (called once per request, before the first node is tried), for
    /// tokens that rotate: read the mounted file again, ask the identity provider's cache. <see langword="null"/>
    /// or empty sends no <c>Authorization</c> header. An exception counts as a transient failure and is retried, and
    /// so does an answer that has not come within the request's timeout (<see cref="RequestTimeout"/>, or a long poll's own); the
    /// token it is given is cancelled then.
    /// </summary>
    public Func<CancellationToken, ValueTask<string?>>? TokenProvider { get; set; }

    /// <summary>The first retry delay after a failure; later ones grow with decorrelated jitter. Default 1 s.</summary>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The cap of the retry delay: during an outage a loop sends at most one request per cap. Default 30 s.</summary>
    public TimeSpan RetryMaxDelay { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A folder where each subscription keeps its last answer, so that a consumer that starts while the
    /// registry is down begins from it. Empty (the default) keeps answers in memory only.
    /// </summary>
    public string? CacheDirectory { get; set; }

    /// <summary>
    /// How long a subscription file in <see cref="CacheDirectory"/> is kept after its subscription was last
    /// running: a running subscription rewrites its file every 15 minutes (also while the registry is
    /// unreachable), and the client deletes older ones (subscriptions no longer made, e.g. sets of names
    /// that service discovery regrouped) when it subscribes. At least 1 hour; default 30 days.
    /// </summary>
    public TimeSpan CacheRetention { get; set; } = TimeSpan.FromDays(30);

    /// <summary>How long the service-discovery endpoint provider waits for a first answer before resolving nothing. Default 10 s.</summary>
    public TimeSpan DiscoveryTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// The service names the service-discovery provider resolves through the registry: exact names, or prefixes
    /// ending in <c>*</c>. Empty (the default): every name the registry lists as a registered application
    /// (<c>GET /v1/services</c>). <c>localhost</c>, IP addresses and the registry servers' own host names are never resolved.
    /// </summary>
    public IList<string> DiscoveryApplications { get; } = [];

    /// <summary>
    /// How long the service-discovery provider keeps watching an application after the last resolver stopped
    /// asking for it, so that the last answer survives an outage that outlasts Microsoft.Extensions.ServiceDiscovery's
    /// idle watchers. Default 10 minutes.
    /// </summary>
    public TimeSpan DiscoveryRetention { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// Whether endpoints resolved by the service-discovery provider carry the service name as their host name
    /// (<c>IHostNameFeature</c>), so requests send <c>Host: provider_test</c> rather than the instance's address. Default false.
    /// </summary>
    public bool ApplyHostNameMetadata { get; set; }
}

/// <summary>Checks every setting and reports all that are wrong at once.</summary>
internal sealed class RegistryClientOptionsValidator : IValidateOptions<RegistryClientOptions>
{
    public ValidateOptionsResult Validate(string? name, RegistryClientOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        if (options.Servers.Count == 0)
        {
            errors.Add("Servers: at least one registry base URL is required.");
        }

        foreach (var server in options.Servers)
        {
            if (server is null || !server.IsAbsoluteUri || (server.Scheme != Uri.UriSchemeHttp && server.Scheme != Uri.UriSchemeHttps))
            {
                errors.Add($"Servers: '{server}' is not an absolute http or https URL.");
            }
        }

        Positive(options.RequestTimeout, nameof(options.RequestTimeout), errors);
        Positive(options.RetryBaseDelay, nameof(options.RetryBaseDelay), errors);
        Positive(options.RetryMaxDelay, nameof(options.RetryMaxDelay), errors);
        Positive(options.DiscoveryTimeout, nameof(options.DiscoveryTimeout), errors);
        if (options.CacheRetention < TimeSpan.FromHours(1) || options.CacheRetention > TimeSpan.FromDays(3650))
        {
            errors.Add("CacheRetention: must be between 1 hour and 3650 days.");
        }

        Positive(options.ConnectTimeout, nameof(options.ConnectTimeout), errors);
        if (options.TcpKeepAlive < TimeSpan.Zero || options.TcpKeepAlive.Ticks % TimeSpan.TicksPerSecond != 0)
        {
            errors.Add("TcpKeepAlive: must be zero (off) or a whole number of seconds.");
        }

        Positive(options.DiscoveryRetention, nameof(options.DiscoveryRetention), errors);
        Positive(options.SessionIdleTimeout, nameof(options.SessionIdleTimeout), errors);
        if (options.Token is not null && options.TokenProvider is not null)
        {
            errors.Add("Token: set either Token or TokenProvider, not both.");
        }

        if (options.Token is { } token && (token.Length == 0 || token.Any(c => c is <= ' ' or > '~')))
        {
            // Said without the token itself: it is a secret.
            errors.Add("Token: must be a non-empty string of visible ASCII characters (no spaces or line breaks).");
        }

        if (options.DiscoveryApplications.Any(string.IsNullOrWhiteSpace))
        {
            errors.Add("DiscoveryApplications: an entry is empty.");
        }
        if (options.Ttl < TimeSpan.FromSeconds(1))
        {
            errors.Add($"Ttl: {options.Ttl} is shorter than the registry's 1 s minimum.");
        }

        // Below a second the wait rounds to 0 and every poll comes back at once: a busy loop, not a long poll.
        if (options.PollWait < TimeSpan.FromSeconds(1) || options.PollWait > TimeSpan.FromSeconds(55))
        {
            errors.Add($"PollWait: {options.PollWait} must be between 1 and 55 s (the registry's cap).");
        }

        if (options.DrainTimeout != TimeSpan.Zero && (options.DrainTimeout < TimeSpan.FromSeconds(1) || options.DrainTimeout > TimeSpan.FromSeconds(60)))
        {
            errors.Add($"DrainTimeout: {options.DrainTimeout} must be zero (no drain) or between 1 and 60 s (the registry's limit).");
        }

        if (options.RetryMaxDelay < options.RetryBaseDelay)
        {
            errors.Add($"RetryMaxDelay: {options.RetryMaxDelay} is shorter than RetryBaseDelay {options.RetryBaseDelay}.");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Throws with every error when the options are invalid (for the plain, non-DI constructor).</summary>
    public static void ThrowIfInvalid(RegistryClientOptions options)
    {
        var result = new RegistryClientOptionsValidator().Validate(null, options);
        if (result.Failed)
        {
            throw new OptionsValidationException(Options.DefaultName, typeof(RegistryClientOptions), result.Failures);
        }
    }

    private static void Positive(TimeSpan value, string name, List<string> errors)
    {
        if (value <= TimeSpan.Zero)
        {
            errors.Add($"{name}: {value} must be positive.");
        }
    }
}
