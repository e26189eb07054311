using System.Diagnostics;
using System.Net;
using Npgsql;
using Registry.Tests.Infrastructure;

namespace Registry.Tests.Access;

/// <summary>The server binary itself: the <c>tokens create</c> command, and the refusal to start when nobody could authenticate.</summary>
[Collection(AccessTestsDefinition.Name)]
public sealed class ServerBinaryTests(AccessCluster cluster)
{
    private static readonly string ServerDll = Path.Combine(AppContext.BaseDirectory, "Registry.Server.dll");

    [Fact]
    public async Task TheTokensCommandCreatesATokenThatRunningNodesAcceptWithinASecond()
    {
        _ = cluster.NodeA.Server;

        var (exitCode, output) = await RunAsync(cluster.ConnectionString,
            "tokens", "create", "--description", "deploys from the command line", "--register", "payments", "payments.*", "--subscribe", "*", "--expires", "2099-01-01T00:00:00Z");

        Assert.True(exitCode == 0, output);
        var secret = output.Split('\n').Select(l => l.Trim()).Single(l => l.StartsWith("rgt_", StringComparison.Ordinal));
        // Audited like a token made through the API, with who made it and never the secret.
        Assert.Contains("Registry.Audit", output, StringComparison.Ordinal);
        Assert.Contains("created (admin False, register [payments,payments.*], subscribe [*]) by the tokens create command", output, StringComparison.Ordinal);
        Assert.Single(output.Split('\n'), l => l.Contains(secret, StringComparison.Ordinal));
        cluster.Secrets.Add(secret);
        Assert.True(secret.Length >= 4 + 43, secret.Length.ToString(System.Globalization.CultureInfo.InvariantCulture)); // 256 bits in base64url
        using var client = AccessCluster.Client(cluster.NodeA, AccessCluster.Bearer(secret));
        var started = Stopwatch.StartNew();
        HttpStatusCode status;
        do
        {
            status = (await client.PostJsonAsync("/v1/register", Http.Provider("payments.api", "10.1.1.1:80"))).StatusCode;
        }
        while (status == HttpStatusCode.Unauthorized && started.Elapsed < TimeSpan.FromSeconds(1));

        Assert.Equal(HttpStatusCode.Created, status);
        Assert.Equal(HttpStatusCode.Forbidden, (await client.PostJsonAsync("/v1/register", Http.Provider("billing", "10.1.1.1:80"))).StatusCode);
        await using var connection = new NpgsqlConnection(cluster.ConnectionString);
        await connection.OpenAsync();
        await using var read = new NpgsqlCommand("SELECT register, subscribe, admin, expires_at FROM tokens WHERE description = 'deploys from the command line'", connection);
        await using var row = await read.ExecuteReaderAsync();
        Assert.True(await row.ReadAsync());
        Assert.Equal(["payments", "payments.*"], row.GetFieldValue<string[]>(0));
        Assert.Equal(["*"], row.GetFieldValue<string[]>(1));
        Assert.False(row.GetBoolean(2));
        Assert.Equal(new DateTime(2099, 1, 1, 0, 0, 0, DateTimeKind.Utc), row.GetDateTime(3));
    }

    [Theory]
    [InlineData("--description is required", "--admin")]
    [InlineData("--description needs a text", "--description", "--admin")]
    // Before, the date and the option were both taken for register patterns: a token that never expires.
    [InlineData("--expires needs a time to come in RFC 3339", "--description", "ci", "--register", "payments", "--expires", "2099-01-01")]
    [InlineData("unknown option '--subscibe'", "--description", "ci", "--register", "payments", "--subscibe", "*")]
    // The API's rules, which the command skipped before: a description fit for logs and listings.
    [InlineData("--description must be 1 to 256 characters without control characters", "--description", "ci\nforged log line", "--admin")]
    public async Task TheTokensCommandSaysWhatIsWrongAndCreatesNothing(string reason, params string[] arguments)
    {
        var (exitCode, output) = await RunAsync(cluster.ConnectionString, ["tokens", "create", .. arguments]);

        Assert.True(exitCode == 2, output);
        Assert.Contains($"tokens: {reason}", output, StringComparison.Ordinal);
        Assert.Contains("usage: tokens create --description", output, StringComparison.Ordinal);
        Assert.DoesNotContain("rgt_", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ARequiredNodeThatCouldAuthenticateNobodyRefusesToStartSayingHowToCreateTheFirstToken()
    {
        var name = $"registry_empty_{Guid.NewGuid():N}";
        await ExecuteAsync(cluster.ConnectionString, $"CREATE DATABASE {name}");
        try
        {
            var empty = new NpgsqlConnectionStringBuilder(cluster.ConnectionString) { Database = name }.ConnectionString;

            var (exitCode, output) = await RunAsync(empty, "--urls", "http://127.0.0.1:0");

            Assert.True(exitCode == 1, output);
            Assert.Contains("The registry cannot start: authentication is required but no credential exists: create the first token with " +
                "'dotnet Registry.Server.dll tokens create --description \"first admin\" --admin'", output, StringComparison.Ordinal);
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await ExecuteAsync(cluster.ConnectionString, $"DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        }
    }

    /// <summary>
    /// Settings out of range stop the node at start, naming the setting. Before, the node started with them: the JWT
    /// library refused its two only at the first JWT (every JWT then answered 500); a negative shutdown spread answered
    /// every parked poll 500 at shutdown; a slow-reader yield of zero or less failed every large answer partway.
    /// </summary>
    [Theory]
    [InlineData("Registry:Auth:Jwt:JwksRefreshInterval", "00:01:00")]
    [InlineData("Registry:Auth:Jwt:ClockSkew", "-00:00:01")]
    [InlineData("Registry:Auth:Jwt:ClockSkew", "3650.00:00:00")]
    [InlineData("Registry:Subscriptions:ShutdownSpread", "-00:00:01")]
    [InlineData("Registry:Subscriptions:SlowReaderYield", "00:00:00")]
    public async Task SettingsOutOfRangeStopTheNodeAtStart(string setting, string value)
    {
        var (exitCode, output) = await RunAsync(cluster.ConnectionString, "--urls", "http://127.0.0.1:0",
            "--Registry:Auth:Jwt:Issuer=https://issuer.example", "--Registry:Auth:Jwt:Audience=registry",
            "--Registry:Auth:Jwt:JwksUrl=https://issuer.example/jwks.json", $"--{setting}={value}");

        Assert.True(exitCode == 1, output);
        Assert.Contains($"{setting} must be", output, StringComparison.Ordinal);
    }

    /// <summary>
    /// A setting that cannot be read as its type stops the node with one line naming it, and the tokens command alike.
    /// Before, the binder's exception went unhandled: a stack trace, and the runtime's abort.
    /// </summary>
    [Theory]
    [InlineData("Registry:Limits:MaxBodyBytes", "--urls", "http://127.0.0.1:0")]
    [InlineData("Registry:Auth:MaxTokenPatterns", "tokens", "create", "--description", "ci")]
    public async Task ASettingThatCannotBeReadStopsTheProcessNamingIt(string setting, params string[] arguments)
    {
        var (exitCode, output) = await RunAsync(cluster.ConnectionString, new Dictionary<string, string> { [setting.Replace(":", "__", StringComparison.Ordinal)] = "many" }, arguments);

        Assert.True(exitCode == 1, output);
        Assert.Contains($"'{setting}'", output, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", output, StringComparison.Ordinal);
    }

    private static Task<(int ExitCode, string Output)> RunAsync(string connectionString, params string[] arguments) =>
        RunAsync(connectionString, new Dictionary<string, string>(), arguments);

    private static async Task<(int ExitCode, string Output)> RunAsync(string connectionString, Dictionary<string, string> environment, params string[] arguments)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = AppContext.BaseDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(ServerDll);
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["ConnectionStrings__Registry"] = connectionString;
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        using var process = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var output = process.StandardOutput.ReadToEndAsync(timeout.Token);
        var error = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        return (process.ExitCode, await output + await error);
    }

    private static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}
