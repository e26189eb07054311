using Npgsql;

namespace Registry.Tests.Infrastructure;

/// <summary>
/// Stalls a node's write batcher: a row lock held by the test stalls the batch that writes that
/// row, so the writes sent meanwhile queue up behind it in a known order (await
/// <see cref="Queued"/> between them) and are taken together once <see cref="ReleaseAsync"/>
/// lets the stalled batch commit.
/// </summary>
public sealed class StalledWriter : IAsyncDisposable
{
    private static readonly string Blocker = Http.Provider("blocker", "10.9.9.9:80");

    private readonly NpgsqlConnection _connection;
    private readonly NpgsqlTransaction _transaction;
    private readonly Task<HttpResponseMessage> _stalled;

    private StalledWriter(NpgsqlConnection connection, NpgsqlTransaction transaction, Task<HttpResponseMessage> stalled, MeterWatch queued)
    {
        _connection = connection;
        _transaction = transaction;
        _stalled = stalled;
        Queued = queued;
    }

    /// <summary>Writes queued behind the stalled batch (sent after the stall began).</summary>
    public MeterWatch Queued { get; }

    /// <summary>Stalls the writer of <paramref name="node"/>, which <paramref name="client"/> talks to.</summary>
    public static async Task<StalledWriter> StartAsync(RegistryCluster cluster, RegistryNode node, HttpClient client)
    {
        using (var registered = await client.PostJsonAsync("/v1/register", Blocker))
        {
            registered.EnsureSuccessStatusCode();
        }

        var connection = await cluster.OpenAsync();
        var transaction = await connection.BeginTransactionAsync();
        await using (var lockRow = new NpgsqlCommand("SELECT 1 FROM instances WHERE application = 'blocker' FOR UPDATE", connection, transaction))
        {
            await lockRow.ExecuteNonQueryAsync();
        }

        // Counts from here: the stalled write comes in and goes out as its batch is taken.
        var queued = MeterWatch.Node(node, "registry.writes.queued");
        var stalled = client.PostJsonAsync("/v1/register", Blocker);
        await WaitForALockWaitAsync(connection);
        return new StalledWriter(connection, transaction, stalled, queued);
    }

    /// <summary>Releases the lock; completes once the stalled batch has been answered.</summary>
    public async Task ReleaseAsync()
    {
        await _transaction.RollbackAsync();
        using var unblocked = await _stalled.WaitAsync(TimeSpan.FromSeconds(10));
        unblocked.EnsureSuccessStatusCode();
    }

    public async ValueTask DisposeAsync()
    {
        Queued.Dispose();
        await _transaction.DisposeAsync();
        await _connection.DisposeAsync();
    }

    /// <summary>
    /// Waits until a session waits for a lock (the writer's batch on the locked row). PostgreSQL
    /// signals nothing for that, so this looks every few milliseconds.
    /// </summary>
    private static async Task WaitForALockWaitAsync(NpgsqlConnection connection)
    {
        await using var waiting = new NpgsqlCommand(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'", connection);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while ((long)(await waiting.ExecuteScalarAsync())! == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "The batch never waited for the locked row.");
            await Task.Delay(TimeSpan.FromMilliseconds(5));
        }
    }
}
