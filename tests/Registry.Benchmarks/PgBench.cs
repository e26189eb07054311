using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Registry.Benchmarks;

/// <summary>
/// PostgreSQL's own ceiling on the same database and machine: pgbench with custom
/// single-row scripts on a table shaped like <c>instances</c> (same key, jsonb meta,
/// fillfactor 70), at the same client concurrency as the registry runs.
/// </summary>
internal sealed partial class PgBench(string binary, BenchDatabase database, string workDirectory)
{
    private const string Table = "bench_pgbench_instances";

    public static string? Find(string? configured)
    {
        if (!string.IsNullOrEmpty(configured))
        {
            return File.Exists(configured) ? configured : null;
        }

        var versions = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(v => Path.Combine(v, "bin", "pgbench")).Order(StringComparer.Ordinal).Reverse()
            : Enumerable.Empty<string>();
        var path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(p => Path.Combine(p, "pgbench"));
        return versions.Concat(path).FirstOrDefault(File.Exists);
    }

    /// <summary>The table, with <paramref name="rows"/> rows for the update script.</summary>
    public async Task PrepareAsync(int rows, CancellationToken cancellationToken)
    {
        await database.ExecuteAsync(
        $"""
        DROP TABLE IF EXISTS {Table};
        CREATE TABLE {Table} (LIKE instances INCLUDING ALL) WITH (fillfactor = 70);
        INSERT INTO {Table} (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
        SELECT 'pgbench-hb', 'http', '10.1.0.0:' || g, '{"{"}"zone": "a"{"}"}', 10, clock_timestamp() + interval '10 seconds', clock_timestamp()
          FROM generate_series(1, {rows}) AS g;
        """, cancellationToken);
        // VACUUM cannot share a multi-statement command.
        await database.ExecuteAsync($"VACUUM ANALYZE {Table}", cancellationToken);
    }

    public Task DropAsync(CancellationToken cancellationToken) => database.ExecuteAsync($"DROP TABLE IF EXISTS {Table}", cancellationToken);

    /// <summary>An insert-or-update of one instance, as a registration of a new instance does (without its pg_notify).</summary>
    public Task<PgBenchResult> UpsertAsync(int clients, TimeSpan duration, CancellationToken cancellationToken) => RunAsync(
        "single-row upsert",
        $"""
        \set n random(1, 1000000000)
        INSERT INTO {Table} AS i (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
        VALUES ('pgbench-' || (:n % 100), 'http', '10.2.0.0:' || :n, '{"{"}"zone": "a"{"}"}', 3600, clock_timestamp() + interval '3600 seconds', clock_timestamp())
        ON CONFLICT (application, protocol, addr) DO UPDATE
           SET meta = excluded.meta, ttl_seconds = excluded.ttl_seconds, expires_at = excluded.expires_at;
        """,
        clients, duration, cancellationToken);

    /// <summary>A lease renewal of one instance, as a heartbeat written one by one would be.</summary>
    public Task<PgBenchResult> UpdateAsync(int rows, int clients, TimeSpan duration, CancellationToken cancellationToken) => RunAsync(
        "single-row update",
        $"""
        \set n random(1, {rows})
        UPDATE {Table} SET expires_at = clock_timestamp() + interval '10 seconds'
         WHERE application = 'pgbench-hb' AND protocol = 'http' AND addr = '10.1.0.0:' || :n;
        """,
        clients, duration, cancellationToken);

    private async Task<PgBenchResult> RunAsync(string name, string script, int clients, TimeSpan duration, CancellationToken cancellationToken)
    {
        var file = Path.Combine(workDirectory, $"pgbench-{name.Replace(' ', '-')}.sql");
        await File.WriteAllTextAsync(file, script + "\n", cancellationToken);
        var connection = database.Connection;
        var start = new ProcessStartInfo(binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[]
        {
            "-h", connection.Host ?? "127.0.0.1", "-p", connection.Port.ToString(CultureInfo.InvariantCulture),
            "-U", connection.Username ?? "postgres",
            "-n", "-M", "prepared", "-c", clients.ToString(CultureInfo.InvariantCulture),
            "-j", Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture),
            "-T", ((int)duration.TotalSeconds).ToString(CultureInfo.InvariantCulture), "-f", file,
            // The database is the last argument: pgbench's -d is --debug, not the database.
            connection.Database ?? "postgres",
        })
        {
            start.ArgumentList.Add(argument);
        }

        if (!string.IsNullOrEmpty(connection.Password))
        {
            start.Environment["PGPASSWORD"] = connection.Password;
        }

        var databaseCpu = database.CpuSeconds();
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"Cannot start {binary}.");
        var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var error = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        var text = await output;
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"pgbench failed ({process.ExitCode}): {await error}{text}");
        }

        return new PgBenchResult(
            name,
            clients,
            duration.TotalSeconds,
            Math.Round(Number(TpsPattern(), text), 1),
            Math.Round(Number(LatencyPattern(), text), 3),
            (long)Number(FailedPattern(), text),
            databaseCpu is { } before && database.CpuSeconds() is { } after ? Math.Round(after - before, 2) : null);
    }

    private static double Number(Regex pattern, string text)
    {
        var match = pattern.Match(text);
        return match.Success ? double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
    }

    [GeneratedRegex(@"tps = ([0-9.]+) \(without initial connection time\)")]
    private static partial Regex TpsPattern();

    [GeneratedRegex(@"latency average = ([0-9.]+) ms")]
    private static partial Regex LatencyPattern();

    [GeneratedRegex(@"number of failed transactions: ([0-9]+)")]
    private static partial Regex FailedPattern();
}
