using Npgsql;
using Registry.Storage;

namespace Registry.Tests.Infrastructure;

/// <summary>
/// A node's change feed cut, and its reconnection held at the full load it must finish before it listens again (by a
/// lock on <c>instances</c> in <see cref="Transaction"/>): the node's feed stays down, and whatever is announced
/// meanwhile waits, until <see cref="ReleaseAsync"/> or disposal.
/// </summary>
public sealed class HeldFeed : IAsyncDisposable
{
    private HeldFeed(NpgsqlConnection connection, NpgsqlTransaction transaction)
    {
        Connection = connection;
        Transaction = transaction;
    }

    /// <summary>The connection holding the lock; more can be locked in <see cref="Transaction"/>.</summary>
    public NpgsqlConnection Connection { get; }

    public NpgsqlTransaction Transaction { get; }

    /// <summary>Cuts the feed of the one node on <paramref name="database"/> and waits until its reconnection waits at the lock.</summary>
    public static async Task<HeldFeed> CutAsync(string database)
    {
        var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        var transaction = await connection.BeginTransactionAsync();
        var held = new HeldFeed(connection, transaction);
        await using (var lockTable = new NpgsqlCommand("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE", connection, transaction))
        await using (var kill = new NpgsqlCommand("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = @name AND datname = current_database()", connection, transaction))
        {
            await lockTable.ExecuteNonQueryAsync();
            kill.Parameters.AddWithValue("name", RegistryDatabase.ChangeFeedApplicationName);
            Assert.Equal(1L, await kill.ExecuteScalarAsync());
        }

        await Backends.WaitingForALockAsync(database, "SELECT i.application, i.protocol, i.addr, i.meta::text%");
        return held;
    }

    /// <summary>Lets the reconnection go on.</summary>
    public Task ReleaseAsync() => Transaction.RollbackAsync();

    public async ValueTask DisposeAsync()
    {
        await Transaction.DisposeAsync();
        await Connection.DisposeAsync();
    }
}
