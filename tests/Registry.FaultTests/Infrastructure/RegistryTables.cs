using System.Text.Json;
using Npgsql;

namespace Registry.FaultTests.Infrastructure;

/// <summary>The suite's instruments in the registry's database, and its reads of it for the checker.</summary>
public static class RegistryTables
{
    /// <summary>
    /// Records every row change with the kind of statement that made it (told apart by its
    /// text: the write batch inserts, the sweeper selects victims, renewals unnest keys, this
    /// suite's own sessions are named; anything else that moves a lease is the grace rule).
    /// </summary>
    public static async Task InstallRecorderAsync(string connectionString, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            """
            CREATE TABLE fault_row_events (
                id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(), change char(1) NOT NULL,
                kind text NOT NULL, application text NOT NULL, protocol text NOT NULL, addr text NOT NULL,
                write text, old_expires timestamptz, new_expires timestamptz, tx bigint NOT NULL DEFAULT txid_current());
            CREATE FUNCTION fault_record() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                q text := current_query();
                k text := CASE WHEN current_setting('application_name') = 'registry-fault' THEN 'fault'
                               WHEN q LIKE '%INSERT INTO instances%' THEN 'write'
                               WHEN q LIKE '%victims%' THEN 'sweep'
                               WHEN q LIKE '%unnest%' THEN 'renew'
                               ELSE 'other' END;
            BEGIN
                IF TG_OP = 'DELETE' THEN
                    INSERT INTO fault_row_events (change, kind, application, protocol, addr, write, old_expires)
                    VALUES ('D', k, OLD.application, OLD.protocol, OLD.addr, OLD.meta->>'w', OLD.expires_at);
                    RETURN OLD;
                ELSIF TG_OP = 'INSERT' THEN
                    INSERT INTO fault_row_events (change, kind, application, protocol, addr, write, new_expires)
                    VALUES ('I', k, NEW.application, NEW.protocol, NEW.addr, NEW.meta->>'w', NEW.expires_at);
                ELSIF NEW.meta IS DISTINCT FROM OLD.meta OR NEW.revision <> OLD.revision THEN
                    INSERT INTO fault_row_events (change, kind, application, protocol, addr, write, old_expires, new_expires)
                    VALUES ('U', k, NEW.application, NEW.protocol, NEW.addr, NEW.meta->>'w', OLD.expires_at, NEW.expires_at);
                ELSIF k NOT IN ('renew', 'write') AND NEW.expires_at > OLD.expires_at THEN
                    -- A lease moved by neither a heartbeat nor a registration: the grace rule.
                    INSERT INTO fault_row_events (change, kind, application, protocol, addr, write, old_expires, new_expires)
                    VALUES ('E', k, NEW.application, NEW.protocol, NEW.addr, NEW.meta->>'w', OLD.expires_at, NEW.expires_at);
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER fault_record AFTER INSERT OR UPDATE OR DELETE ON instances
                FOR EACH ROW EXECUTE FUNCTION fault_record();
            """, connection);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    public static async Task<List<RowEvent>> RowEventsAsync(string connectionString, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            "SELECT id, at, change, kind, application, protocol, addr, write, old_expires, new_expires, tx FROM fault_row_events ORDER BY id", connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var events = new List<RowEvent>();
        while (await reader.ReadAsync(cancellationToken))
        {
            events.Add(new RowEvent(
                reader.GetInt64(0), reader.GetFieldValue<DateTimeOffset>(1), reader.GetString(2)[0], reader.GetString(3),
                reader.GetString(4), reader.GetString(5), reader.GetString(6), reader.IsDBNull(7) ? null : reader.GetString(7),
                reader.IsDBNull(8) ? null : reader.GetFieldValue<DateTimeOffset>(8), reader.IsDBNull(9) ? null : reader.GetFieldValue<DateTimeOffset>(9),
                reader.GetInt64(10)));
        }

        return events;
    }

    /// <summary>The table's content per application, in the canonical form the checker compares.</summary>
    public static async Task<Dictionary<string, List<Endpoint>>> TableAsync(string connectionString, CancellationToken cancellationToken)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand("SELECT application, protocol, addr, meta::text FROM instances", connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var table = new Dictionary<string, List<Endpoint>>(StringComparer.Ordinal);
        while (await reader.ReadAsync(cancellationToken))
        {
            var endpoint = new Endpoint(reader.GetString(0), reader.GetString(1), reader.GetString(2), CanonicalMeta(JsonDocument.Parse(reader.GetString(3)).RootElement));
            if (!table.TryGetValue(endpoint.Application, out var list))
            {
                table[endpoint.Application] = list = [];
            }

            list.Add(endpoint);
        }

        foreach (var list in table.Values)
        {
            list.Sort((a, b) => string.CompareOrdinal(a.Protocol + " " + a.Addr, b.Protocol + " " + b.Addr));
        }

        return table;
    }

    /// <summary>Meta as sorted <c>key=value</c> pairs: the same text whatever the source's key order.</summary>
    public static string CanonicalMeta(JsonElement meta) =>
        meta.ValueKind != JsonValueKind.Object
            ? "{}"
            : "{" + string.Join(",", meta.EnumerateObject().Select(p => $"{p.Name}={p.Value.GetString()}").Order(StringComparer.Ordinal)) + "}";
}
