using System.Diagnostics;
using Npgsql;

namespace Registry.Tests.Infrastructure;

/// <summary>The database's sessions as PostgreSQL shows them, for tests that hold a node's statement at a lock.</summary>
public static class Backends
{
    /// <summary>The backend of a statement like <paramref name="like"/> in <paramref name="database"/>, once it waits for a lock.</summary>
    public static async Task<int> WaitingForALockAsync(string database, string like)
    {
        await using var connection = new NpgsqlConnection(database);
        await connection.OpenAsync();
        await using var find = new NpgsqlCommand(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE @like AND pid <> pg_backend_pid()", connection);
        find.Parameters.AddWithValue("like", like);
        var deadline = Stopwatch.StartNew();
        // Nothing signals a session's wait for a lock but the catalog: read it until it shows.
        while (true)
        {
            if (await find.ExecuteScalarAsync() is int pid)
            {
                return pid;
            }

            Assert.True(deadline.Elapsed < TimeSpan.FromSeconds(20), $"no statement like {like} waited for a lock");
            await Task.Delay(50);
        }
    }
}
