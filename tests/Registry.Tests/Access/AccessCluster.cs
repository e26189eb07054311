using System.Buffers.Text;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests.Access;

/// <summary>
/// Two nodes that require authentication, on a database of their own, with JWTs accepted from
/// a test issuer whose key set is a file written here, and one token per kind of credential.
/// Node B protects /metrics; node A captures every log line at Debug.
/// </summary>
public sealed class AccessCluster : IAsyncLifetime
{
    public const string Issuer = "https://issuer.registry.test";
    public const string Audience = "registry";

    /// <summary>An admin credential from configuration (no dots: dotted tokens are JWTs).</summary>
    public static readonly string Bootstrap = "bootstrap-" + Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));

    private readonly RSA _rsa = RSA.Create(2048);
    private readonly string _folder = Directory.CreateTempSubdirectory("registry-access-").FullName;
    private TestDatabase? _database;
    private RegistryNode? _nodeB;
    private readonly List<string> _databases = [];

    public string ConnectionString { get; private set; } = "";

    public RegistryNode NodeA { get; private set; } = null!;

    /// <summary>A second node on the same database (with /metrics protected), started on first use.</summary>
    public RegistryNode NodeB => _nodeB ??= Start(new() { ["Registry:Auth:ProtectMetrics"] = "true" });

    public CapturedLogs Logs { get; } = new();

    /// <summary>The Authorization header value of each credential of the matrix (null: none sent).</summary>
    public Dictionary<string, string?> Credentials { get; } = new(StringComparer.Ordinal);

    /// <summary>Every secret handed out, to be sure none reaches a log.</summary>
    public List<string> Secrets { get; } = [Bootstrap];

    public string JwksFile => Path.Combine(_folder, "jwks.json");

    public async Task InitializeAsync()
    {
        _database = await TestDatabase.StartAsync();
        ConnectionString = _database.ConnectionString;
        var parameters = _rsa.ExportParameters(false);
        var jwks = new JsonObject
        {
            ["keys"] = new JsonArray(new JsonObject
            {
                ["kty"] = "RSA",
                ["use"] = "sig",
                ["alg"] = "RS256",
                ["kid"] = "test-key",
                ["n"] = Base64Url.EncodeToString(parameters.Modulus),
                ["e"] = Base64Url.EncodeToString(parameters.Exponent),
            }),
        };
        await File.WriteAllTextAsync(JwksFile, jwks.ToJsonString());

        NodeA = Start(new()
        {
            ["Logging:LogLevel:Default"] = "Debug",
            ["Logging:LogLevel:Microsoft.AspNetCore"] = "Debug",
        }, Logs);
        _ = NodeA.Server;

        Credentials["none"] = null;
        Credentials["malformed"] = "Basic cmVnaXN0cnk6c2VjcmV0";
        Credentials["unknown"] = "Bearer rgt_" + Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));
        Credentials["expired"] = Bearer(await ExpireAsync((await CreateTokenAsync("""{"description":"expired","register":["*"],"subscribe":["*"],"admin":true}""")).Secret));
        var revoked = await CreateTokenAsync("""{"description":"revoked","register":["*"],"subscribe":["*"],"admin":true}""");
        using (var admin = Client(NodeA, Bearer(Bootstrap)))
        {
            Assert.Equal(System.Net.HttpStatusCode.NoContent, (await admin.DeleteAsync(new Uri($"/v1/tokens/{revoked.Id}", UriKind.Relative))).StatusCode);
        }

        Credentials["revoked"] = Bearer(revoked.Secret);
        Credentials["other application"] = Bearer((await CreateTokenAsync("""{"description":"billing team","register":["billing"],"subscribe":["billing"]}""")).Secret);
        Credentials["subscribe-only"] = Bearer((await CreateTokenAsync("""{"description":"payments readers","subscribe":["payments"]}""")).Secret);
        Credentials["register-only"] = Bearer((await CreateTokenAsync("""{"description":"payments deploys","register":["payments","payments.*"]}""")).Secret);
        Credentials["admin"] = Bearer((await CreateTokenAsync("""{"description":"operators","admin":true}""")).Secret);
        Credentials["JWT"] = Bearer(Jwt(new() { ["sub"] = "system:serviceaccount:payments:api", ["registry_register"] = new JsonArray("payments"), ["registry_subscribe"] = new JsonArray("payments*") }));
    }

    public static string Bearer(string secret) => $"Bearer {secret}";

    public static HttpClient Client(RegistryNode node, string? authorization)
    {
        var client = node.CreateClient();
        if (authorization is not null)
        {
            client.DefaultRequestHeaders.TryAddWithoutValidation("Authorization", authorization);
        }

        return client;
    }

    /// <summary>A fresh, empty database on the cluster's server (dropped with it), for a node whose tokens must be its own.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        var name = $"registry_access_{Guid.NewGuid():N}";
        _databases.Add(name);
        await using (var connection = new NpgsqlConnection(ConnectionString))
        {
            await connection.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE {name}", connection);
            await create.ExecuteNonQueryAsync();
        }

        return new NpgsqlConnectionStringBuilder(ConnectionString) { Database = name }.ConnectionString;
    }

    /// <summary>Creates a token through the API with the bootstrap credential.</summary>
    public async Task<(string Id, string Secret)> CreateTokenAsync(string body, RegistryNode? node = null)
    {
        using var admin = Client(node ?? NodeA, Bearer(Bootstrap));
        using var response = await admin.PostJsonAsync("/v1/tokens", body);
        var created = await response.ReadJsonAsync();
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Created, created.ToJsonString());
        var secret = (string)created["token"]!;
        Secrets.Add(secret);
        return ((string)created["id"]!, secret);
    }

    /// <summary>A JWT from the test issuer, signed with its key; <paramref name="expires"/> may lie in the past.</summary>
    public string Jwt(Dictionary<string, object> claims, DateTime? expires = null, string audience = Audience)
    {
        var now = DateTime.UtcNow;
        var token = new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
        {
            Issuer = Issuer,
            Audience = audience,
            IssuedAt = (expires ?? now.AddMinutes(10)).AddMinutes(-20),
            NotBefore = (expires ?? now.AddMinutes(10)).AddMinutes(-20),
            Expires = expires ?? now.AddMinutes(10),
            Claims = claims,
            SigningCredentials = new SigningCredentials(new RsaSecurityKey(_rsa) { KeyId = "test-key" }, SecurityAlgorithms.RsaSha256),
        });
        Secrets.Add(token);
        return token;
    }

    /// <summary>
    /// Moves a token's expiry into the past in SQL (the API only takes future ones) and announces it
    /// as the API would, then waits until node A refuses it as expired.
    /// </summary>
    private async Task<string> ExpireAsync(string secret)
    {
        await using (var connection = new NpgsqlConnection(ConnectionString))
        {
            await connection.OpenAsync();
            await using var expire = new NpgsqlCommand(
                "UPDATE tokens SET expires_at = now() - interval '10 minutes' WHERE description = 'expired'; SELECT pg_notify('registry_tokens', 'expired')", connection);
            await expire.ExecuteNonQueryAsync();
        }

        using var client = Client(NodeA, Bearer(secret));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while ((await client.GetAsync(new Uri("/v1/services", UriKind.Relative))).StatusCode != System.Net.HttpStatusCode.Unauthorized)
        {
            Assert.True(DateTime.UtcNow < deadline, "the expiry did not reach node A");
            await Task.Delay(20);
        }

        return secret;
    }

    /// <summary>A node configured as the cluster's, on its database or on <paramref name="database"/>.</summary>
    public RegistryNode Start(Dictionary<string, string?> settings, CapturedLogs? logs = null, string? database = null)
    {
        var all = new Dictionary<string, string?>
        {
            ["Registry:Auth:Mode"] = "Required",
            ["Registry:Auth:BootstrapToken"] = Bootstrap,
            ["Registry:Auth:MaxFailuresPerMinute"] = "0",
            ["Registry:Auth:LastUsedFlushInterval"] = "00:00:00.200",
            ["Registry:Auth:Jwt:Issuer"] = Issuer,
            ["Registry:Auth:Jwt:Audience"] = Audience,
            ["Registry:Auth:Jwt:JwksFile"] = JwksFile,
        };
        foreach (var (key, value) in settings)
        {
            all[key] = value;
        }

        return new RegistryNode(database ?? ConnectionString, all, logs);
    }

    public async Task DisposeAsync()
    {
        if (_nodeB is not null)
        {
            await _nodeB.DisposeAsync();
        }

        await NodeA.DisposeAsync();
        if (_databases.Count > 0)
        {
            NpgsqlConnection.ClearAllPools();
            await using var connection = new NpgsqlConnection(ConnectionString);
            await connection.OpenAsync();
            foreach (var name in _databases)
            {
                await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS {name} WITH (FORCE)", connection);
                await drop.ExecuteNonQueryAsync();
            }
        }

        if (_database is not null)
        {
            await _database.DisposeAsync();
        }

        _rsa.Dispose();
        Directory.Delete(_folder, recursive: true);
    }
}

/// <summary>
/// The access suites share one cluster (one database, two nodes) and run one after another,
/// after the parallel collections: node A keeps every log line, and tests elsewhere measure the
/// process's memory.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class AccessTestsDefinition : ICollectionFixture<AccessCluster>
{
    public const string Name = "access";
}
