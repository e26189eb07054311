using System.Net;
using System.Text.Json.Nodes;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests;

/// <summary>
/// A node that starts on rows it did not write serves their meta exactly as stored, in the
/// canonical order: the full load reads it with its own parser and shares repeated strings.
/// </summary>
public sealed class StoredMetaTests(RegistryCluster cluster) : RegistryTest(cluster)
{
    [Fact]
    public async Task MetaLoadedFromTheDatabaseIsServedExactlyAndInCanonicalOrder()
    {
        var database = await Cluster.CreateDatabaseAsync("registry-stored-meta-test");
        var longValue = new string('v', 100);
        var stored = new Dictionary<string, string>
        {
            // jsonb keeps its keys shortest first; answers list them in ordinal order.
            ["10.0.0.1:80"] = """{"zone":"a","b":"say \"hi\"\\n","é":"ü","tag":"read"}""",
            ["10.0.0.2:80"] = $$"""{"zone":"a","tag":"read","long":"{{longValue}}"}""",
            ["10.0.0.3:80"] = """{"zone":"a","tag":"read"}""",
            ["10.0.0.4:80"] = "{}",
        };
        await using (var migrating = new RegistryNode(database))
        {
            migrating.CreateClient().Dispose(); // the schema, then a node that starts on the rows below
        }

        await using (var connection = new NpgsqlConnection(database))
        {
            await connection.OpenAsync();
            foreach (var (addr, meta) in stored)
            {
                await using var insert = new NpgsqlCommand(
                    """
                    INSERT INTO instances (application, protocol, addr, meta, ttl_seconds, expires_at, registered_at)
                    VALUES ('stored-meta', 'http', @addr, @meta::jsonb, 60, clock_timestamp() + interval '60 seconds', clock_timestamp())
                    """, connection);
                insert.Parameters.AddWithValue("addr", addr);
                insert.Parameters.AddWithValue("meta", meta);
                await insert.ExecuteNonQueryAsync();
            }
        }

        await using var node = new RegistryNode(database);
        using var client = node.CreateClient();
        using var response = await client.GetAsync(new Uri("/v1/services/stored-meta", UriKind.Relative));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var served = (await response.ReadJsonAsync())["endpoints"]!.AsArray().ToDictionary(e => (string)e!["addr"]!, e => e!["meta"]!.AsObject());

        Assert.Equal(["b", "tag", "zone", "é"], served["10.0.0.1:80"].Select(p => p.Key));
        Assert.Equal("say \"hi\"\\n", (string?)served["10.0.0.1:80"]["b"]);
        Assert.Equal("ü", (string?)served["10.0.0.1:80"]["é"]);
        Assert.Equal(["long", "tag", "zone"], served["10.0.0.2:80"].Select(p => p.Key));
        Assert.Equal(longValue, (string?)served["10.0.0.2:80"]["long"]);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"tag":"read","zone":"a"}"""), served["10.0.0.3:80"]));
        Assert.Empty(served["10.0.0.4:80"]);
    }
}
