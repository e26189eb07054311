using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;

namespace Registry.Storage;

/// <summary>The database connection (section <c>Registry:Database</c>).</summary>
public sealed class DatabaseOptions
{
    /// <summary>Seconds to wait for a connection before a request answers 503.</summary>
    [Range(1, 300)]
    public int ConnectTimeoutSeconds { get; set; } = 5;

    /// <summary>Seconds a statement may run.</summary>
    [Range(1, 3600)]
    public int CommandTimeoutSeconds { get; set; } = 30;

    /// <summary>
    /// Seconds one of the node's sessions may sit idle inside a transaction before PostgreSQL ends it
    /// (<c>idle_in_transaction_session_timeout</c>, unless the connection string's Options set it). A sweep holds
    /// the cluster's sweep lock across a few statements: were its node to die between them with no FIN reaching
    /// the database (power lost, route gone), its session would keep that lock, and every node would stop
    /// evicting, until the server's TCP keepalive gave up (two hours by default). The sweep's statements follow each
    /// other with no pause of the node's, so a few seconds is ample. 0 sends nothing: for a pooler that refuses the
    /// <c>options</c> startup parameter (PgBouncer without <c>ignore_startup_parameters = options</c>), set it on the
    /// registry's role instead (<c>ALTER ROLE … SET idle_in_transaction_session_timeout = '10s'</c>).
    /// </summary>
    [Range(0, 3600)]
    public int IdleInTransactionTimeoutSeconds { get; set; } = 10;

    /// <summary>
    /// Most connections in each of the node's two pools (statements planned per run, and those
    /// planned once), unless the connection string sets <c>Maximum Pool Size</c>. The change feed's
    /// one LISTEN connection is outside both.
    /// </summary>
    [Range(1, 10_000)]
    public int MaxPoolSize { get; set; } = 100;

    /// <summary>Connections each pool keeps open when idle, unless the connection string sets <c>Minimum Pool Size</c>.</summary>
    [Range(0, 10_000)]
    public int MinPoolSize { get; set; }

    /// <summary>Where the private PostgreSQL cluster lives when no connection string is configured; empty means a folder under the system's temporary directory.</summary>
    public string LocalDataDirectory { get; set; } = "";

    /// <summary>Folder of the PostgreSQL server binaries (initdb, pg_ctl); empty means search /usr/lib/postgresql/*/bin and PATH.</summary>
    public string LocalBinDirectory { get; set; } = "";
}

/// <summary>The rule of <see cref="DatabaseOptions"/> that spans fields.</summary>
internal sealed class DatabaseOptionsValidator : IValidateOptions<DatabaseOptions>
{
    public ValidateOptionsResult Validate(string? name, DatabaseOptions options) =>
        options.MinPoolSize <= options.MaxPoolSize
            ? ValidateOptionsResult.Success
            : ValidateOptionsResult.Fail("Registry:Database needs MinPoolSize <= MaxPoolSize.");
}
