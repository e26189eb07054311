using Npgsql;
using Registry.Postgres;
using Registry.Storage;

namespace Registry.Benchmarks;

/// <summary>
/// The database under test: a private cluster this tool starts (with pg_stat_statements
/// preloaded, so statements can be counted) or one given by connection string. Also reads
/// PostgreSQL's own statistics and seeds rows for the cold start.
/// </summary>
internal sealed class BenchDatabase : IAsyncDisposable
{
    /// <summary>Applications this tool creates start with it, so cleanup touches nothing else.</summary>
    public const string Prefix = "bench-";

    private readonly LocalPostgres? _local;
    private readonly NpgsqlConnection _probe;

    private BenchDatabase(string connectionString, LocalPostgres? local, NpgsqlConnection probe, bool statementsAvailable, string version)
    {
        ConnectionString = connectionString;
        _local = local;
        _probe = probe;
        StatementsAvailable = statementsAvailable;
        Version = version;
    }

    public string ConnectionString { get; }

    public bool StatementsAvailable { get; }

    public string Version { get; }

    public string Description => _local is null ? "given by connection string" : $"private cluster on 127.0.0.1:{_local.Port} ({_local.DataDirectory})";

    /// <summary>
    /// CPU seconds the private cluster has used so far: the postmaster with the children it has
    /// reaped (cutime, cstime) plus the children alive now. Null for a database given by
    /// connection string, which may be on another machine.
    /// </summary>
    public double? CpuSeconds()
    {
        if (_local is null || !int.TryParse(File.ReadLines(Path.Combine(_local.DataDirectory, "postmaster.pid")).First(), out var postmaster))
        {
            return null;
        }

        long ticks = 0;
        foreach (var folder in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(folder), out var pid) || Stat(pid) is not { } stat)
            {
                continue;
            }

            // After the command's closing parenthesis: state, ppid, … utime (11), stime, cutime, cstime.
            if (pid == postmaster)
            {
                ticks += stat[11] + stat[12] + stat[13] + stat[14];
            }
            else if (stat[1] == postmaster)
            {
                ticks += stat[11] + stat[12];
            }
        }

        return ticks / 100.0; // USER_HZ, 100 on Linux

        static long[]? Stat(int pid)
        {
            try
            {
                var text = File.ReadAllText($"/proc/{pid}/stat");
                return text[(text.LastIndexOf(')') + 2)..].Split(' ').Select(f => long.TryParse(f, out var v) ? v : 0).ToArray();
            }
            catch (IOException)
            {
                return null; // exited meanwhile
            }
            catch (UnauthorizedAccessException)
            {
                return null;
            }
        }
    }

    public static async Task<BenchDatabase> OpenAsync(string? connectionString, string workDirectory, bool durable, TextWriter log, CancellationToken cancellationToken)
    {
        LocalPostgres? local = null;
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            var folder = Path.Combine(workDirectory, "postgres");
            local = await LocalPostgres.StartAsync(folder, null, durable, cancellationToken);
            // pg_stat_statements must be preloaded: set it, restart, and the setting stays in postgresql.auto.conf.
            await using (var setup = new NpgsqlConnection(local.ConnectionString))
            {
                await setup.OpenAsync(cancellationToken);
                await using var alter = new NpgsqlCommand("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'", setup);
                await alter.ExecuteNonQueryAsync(cancellationToken);
            }

            await local.DisposeAsync();
            local = await LocalPostgres.StartAsync(folder, null, durable, cancellationToken);
            connectionString = local.ConnectionString;
            await log.WriteLineAsync($"Started a private PostgreSQL cluster in {folder} (fsync {(durable ? "on" : "off")}).");
        }

        var probe = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false, ApplicationName = "registry-benchmark-probe" }.ConnectionString);
        await probe.OpenAsync(cancellationToken);
        var statements = false;
        try
        {
            await using var create = new NpgsqlCommand("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", probe);
            await create.ExecuteNonQueryAsync(cancellationToken);
            await using var check = new NpgsqlCommand("SELECT count(*) FROM pg_stat_statements", probe);
            await check.ExecuteScalarAsync(cancellationToken);
            statements = true;
        }
        catch (PostgresException e)
        {
            await log.WriteLineAsync($"pg_stat_statements is not available ({e.MessageText}); statement counts fall back to transactions.");
        }

        await using var versionCommand = new NpgsqlCommand("SHOW server_version", probe);
        var version = (string?)await versionCommand.ExecuteScalarAsync(cancellationToken) ?? "?";
        return new BenchDatabase(connectionString, local, probe, statements, version);
    }

    public readonly record struct Counters(long? Statements, long Transactions, long Inserted, long Updated, long Deleted, long Timestamp);

    /// <summary>Reads the counters; the probe's own statements (they name pg_stat_*) are left out.</summary>
    public async Task<Counters> ReadAsync(CancellationToken cancellationToken)
    {
        long? statements = null;
        if (StatementsAvailable)
        {
            await using var count = new NpgsqlCommand(
                """
                SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND query NOT LIKE '%pg_stat_%'
                """, _probe);
            statements = (long)(await count.ExecuteScalarAsync(cancellationToken))!;
        }

        await using var command = new NpgsqlCommand(
            """
            SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted
              FROM pg_stat_database WHERE datname = current_database()
            """, _probe);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return new Counters(statements, reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), System.Diagnostics.Stopwatch.GetTimestamp());
    }

    /// <summary>Calls per statement text (pg_stat_statements), to say which statements ran in a window.</summary>
    public async Task<Dictionary<string, long>> ReadByStatementAsync(CancellationToken cancellationToken)
    {
        var calls = new Dictionary<string, long>(StringComparer.Ordinal);
        if (!StatementsAvailable)
        {
            return calls;
        }

        await using var command = new NpgsqlCommand(
            """
            SELECT regexp_replace(query, '\s+', ' ', 'g'), calls FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '%pg_stat_%'
            """, _probe);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var text = reader.GetString(0);
            calls[text] = calls.GetValueOrDefault(text) + reader.GetInt64(1);
        }

        return calls;
    }

    /// <summary>The statements that ran between two readings, most frequent first, each text cut short.</summary>
    public static List<StatementCalls> Difference(Dictionary<string, long> before, Dictionary<string, long> after) =>
        after.Select(p => new StatementCalls(p.Key.Length > 100 ? p.Key[..100] + "…" : p.Key, p.Value - before.GetValueOrDefault(p.Key)))
            .Where(s => s.Calls > 0)
            .OrderByDescending(s => s.Calls)
            .ToList();

    public static DatabaseWork Between(Counters before, Counters after) => new(
        after.Statements - before.Statements,
        after.Transactions - before.Transactions,
        after.Inserted - before.Inserted,
        after.Updated - before.Updated,
        after.Deleted - before.Deleted,
        Math.Round(System.Diagnostics.Stopwatch.GetElapsedTime(before.Timestamp, after.Timestamp).TotalSeconds, 3));

    public async Task ExecuteAsync(string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, _probe) { CommandTimeout = 600 };
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>
    /// Inserts <paramref name="count"/> instances over 1,000 applications straight into the
    /// table (no notification: the nodes that load them are started afterwards).
    /// </summary>
    public Task SeedColdStartAsync(int count, CancellationToken cancellationToken) => ExecuteAsync(
        $"""
        INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
        SELECT '{Prefix}cold-' || (g % 1000), 'http',
               '10.' || (g / 65536 % 256) || '.' || (g / 256 % 256) || '.' || (g % 256) || ':8080',
               jsonb_build_object('zone', 'z' || (g % 3), 'tag', 'read', 'version', '1.' || (g % 7)),
               3600, clock_timestamp() + interval '1 hour', clock_timestamp()
          FROM generate_series(1, {count}) AS g;
        ANALYZE instances;
        """, cancellationToken);

    /// <summary>
    /// Deletes this tool's rows and tells running nodes, as the sweeper would. Against running
    /// nodes the sweeper and the nodes' write batches lock the same rows in their own order, so
    /// one DELETE of everything could deadlock with them (40P01 was seen against two nodes and
    /// 140,000 instances). Instead it deletes in batches that skip rows locked by anyone else —
    /// it never waits for a row lock, so it cannot be part of a deadlock — and comes back for
    /// the skipped rows; a deadlock or serialization failure anyway retries the batch.
    /// </summary>
    public async Task DeleteBenchRowsAsync(CancellationToken cancellationToken)
    {
        const int BatchSize = 5_000;
        await using (var exists = new NpgsqlCommand("SELECT to_regclass('instances') IS NOT NULL", _probe))
        {
            if (!(bool)(await exists.ExecuteScalarAsync(cancellationToken))!)
            {
                return; // no node ever ran against this database (--only auth uses databases of its own)
            }
        }

        var began = System.Diagnostics.Stopwatch.GetTimestamp();
        var failures = 0;
        while (true)
        {
            long deleted;
            try
            {
                await using var command = new NpgsqlCommand(
                    $"""
                    WITH victims AS (
                        SELECT application, protocol, addr FROM instances
                         WHERE application LIKE '{Prefix}%'
                         LIMIT {BatchSize}
                           FOR UPDATE SKIP LOCKED),
                    gone AS (
                        DELETE FROM instances i USING victims v
                         WHERE i.application = v.application AND i.protocol = v.protocol AND i.addr = v.addr
                        RETURNING i.application),
                    told AS (
                        SELECT pg_notify('{Schema.ChangeChannel}', application) FROM (SELECT DISTINCT application FROM gone) AS changed)
                    -- The second column makes the notifications run.
                    SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM told)
                    """, _probe) { CommandTimeout = 600 };
                deleted = (long)(await command.ExecuteScalarAsync(cancellationToken))!;
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure && ++failures <= 10)
            {
                continue;
            }

            if (deleted > 0)
            {
                continue;
            }

            // Nothing deletable: done, unless rows are left that someone else has locked.
            await using var left = new NpgsqlCommand($"SELECT EXISTS (SELECT 1 FROM instances WHERE application LIKE '{Prefix}%')", _probe);
            if (!(bool)(await left.ExecuteScalarAsync(cancellationToken))!)
            {
                return;
            }

            if (System.Diagnostics.Stopwatch.GetElapsedTime(began) > TimeSpan.FromMinutes(2))
            {
                throw new TimeoutException($"{Prefix}* instances stayed locked by other sessions for two minutes; they were not all deleted.");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken);
        }
    }

    /// <summary>
    /// A fresh, empty database of the same cluster (dropped first if a previous run left it),
    /// for nodes that must not see each other's writes; returns its connection string.
    /// </summary>
    public async Task<string> CreateDatabaseAsync(string name, CancellationToken cancellationToken)
    {
        await ExecuteAsync($"DROP DATABASE IF EXISTS {name} WITH (FORCE)", cancellationToken);
        await ExecuteAsync($"CREATE DATABASE {name}", cancellationToken);
        return new NpgsqlConnectionStringBuilder(ConnectionString) { Database = name }.ConnectionString;
    }

    /// <summary>What pgbench needs to reach the same database.</summary>
    public NpgsqlConnectionStringBuilder Connection => new(ConnectionString);

    public async ValueTask DisposeAsync()
    {
        await _probe.DisposeAsync();
        if (_local is not null)
        {
            await _local.DisposeAsync();
        }
    }
}
