using System.Net;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// The node's writers lock rows of <c>instances</c> in one order (a registration batch's), so
/// that two of them, on one node or on two, can never deadlock.
/// </summary>
public sealed class LockOrderTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    [Fact]
    public async Task ARenewalBatchWaitingForARowHoldsNoRowThatARegistrationBatchLocksAfterIt()
    {
        const string ApplicationName = "registry-lock-order-test";
        const int Instances = 40;
        var database = await Cluster.CreateDatabaseAsync(ApplicationName);
        await using var node = new RegistryNode(database);
        using var client = node.CreateClient();
        await using (var connection = new NpgsqlConnection(database))
        {
            // Leases close to their end, so every heartbeat is written; inserted last key first,
            // so that a scan meets them against the registration order.
            await connection.OpenAsync();
            await using var insert = new NpgsqlCommand(
                $"""
                INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
                SELECT 'locks', 'http', '10.0.0.' || i || ':80', '{"{}"}', 60, clock_timestamp() + interval '20 seconds', clock_timestamp()
                  FROM generate_series(1, {Instances}) AS i
                 ORDER BY ('10.0.0.' || i || ':80') COLLATE "default" DESC
                """, connection);
            await insert.ExecuteNonQueryAsync();
        }

        await node.ReloadAsync();
        using var written = MeterWatch.Node(node, "registry.heartbeats.written");

        // A registration batch (ORDER BY over its unnest: the database's default collation)
        // holds the first row of the order…
        await using var registration = new NpgsqlConnection(database);
        await registration.OpenAsync();
        await using var transaction = await registration.BeginTransactionAsync();
        var keys = new List<string>();
        await using (var order = new NpgsqlCommand("SELECT addr FROM instances ORDER BY addr COLLATE \"default\"", registration, transaction))
        await using (var reader = await order.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                keys.Add(reader.GetString(0));
            }
        }

        await LockAsync(registration, transaction, keys[0], nowait: false);

        // …when every instance heartbeats: the renewal batch waits for that row.
        var heartbeats = await Task.WhenAll(keys.Select(async addr =>
        {
            using var response = await client.PostJsonAsync("/v1/heartbeat", Http.Provider("locks", addr));
            return response.StatusCode;
        }));
        Assert.All(heartbeats, s => Assert.Equal(HttpStatusCode.OK, s));
        await WaitForBlockedRenewalAsync(registration, transaction, ApplicationName);

        // The rest of the registration batch takes its rows without waiting: the renewal took
        // none of them ahead of the row it waits for (had it, this would be a deadlock).
        foreach (var addr in keys.Skip(1))
        {
            await LockAsync(registration, transaction, addr, nowait: true);
        }

        await transaction.CommitAsync();
        await written.WaitForAsync(Instances, TimeSpan.FromSeconds(15));
    }

    private static async Task LockAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string addr, bool nowait)
    {
        await using var command = new NpgsqlCommand(
            $"SELECT 1 FROM instances WHERE application = 'locks' AND protocol = 'http' AND addr = @addr FOR NO KEY UPDATE{(nowait ? " NOWAIT" : "")}",
            connection, transaction);
        command.Parameters.AddWithValue("addr", addr);
        Assert.Equal(1, await command.ExecuteScalarAsync());
    }

    /// <summary>
    /// Waits until one of the node's sessions waits for a row lock (the renewal's statement).
    /// Inside a transaction PostgreSQL keeps the first snapshot of the statistics views, so each
    /// look clears it: without that, a first look taken before the renewal blocked was all the
    /// test ever saw (it failed that way about one run in five under load).
    /// </summary>
    private static async Task WaitForBlockedRenewalAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string applicationName)
    {
        await using var clear = new NpgsqlCommand("SELECT pg_stat_clear_snapshot()", connection, transaction);
        await using var command = new NpgsqlCommand(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = @name AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
            connection, transaction);
        command.Parameters.AddWithValue("name", applicationName);
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (true)
        {
            await clear.ExecuteNonQueryAsync();
            if ((long)(await command.ExecuteScalarAsync())! > 0)
            {
                return;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), deadline.Token);
        }
    }
}
