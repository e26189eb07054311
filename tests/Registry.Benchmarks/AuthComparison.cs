using System.Globalization;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;

namespace Registry.Benchmarks;

/// <summary>
/// Access control on and off in the same run: two nodes from the same build, each on a
/// database of its own in the same cluster (so neither loads the other's writes), one with
/// <c>Registry:Auth:Mode=Required</c> and a registry token per load client, the other Open.
/// Both are warmed alike, then each round measures registrations, heartbeats and fan-out on
/// one node and then the other (the order swapped every round), and the medians are compared.
/// </summary>
public sealed partial class Benchmark
{
    /// <summary>The databases of the Open node and the Required node, dropped after the comparison.</summary>
    private static readonly string[] AuthDatabases = ["registry_bench_open", "registry_bench_required"];

    private async Task<AuthComparisonResult> AuthComparisonAsync(string serverDll, BenchDatabase database, string work, BenchmarkResult result, CancellationToken cancellationToken)
    {
        await _log.WriteLineAsync($"Auth comparison: a node with access control Required ({_options.AuthTokens} tokens) and one Open, {_options.RegistrationRounds} alternating rounds…");
        var openDatabase = await database.CreateDatabaseAsync(AuthDatabases[0], cancellationToken);
        var requiredDatabase = await database.CreateDatabaseAsync(AuthDatabases[1], cancellationToken);
        // An admin credential only for creating the load clients' tokens.
        var bootstrap = Convert.ToHexString(RandomNumberGenerator.GetBytes(32));
        await using var open = ServerNode.Start("auth-open", serverDll, openDatabase, work, _options.NodeEnvironment);
        await using var required = ServerNode.Start(
            "auth-required", serverDll, requiredDatabase, work,
            new Dictionary<string, string>(_options.NodeEnvironment, StringComparer.Ordinal)
            {
                ["Registry__Auth__Mode"] = "Required",
                ["Registry__Auth__BootstrapToken"] = bootstrap,
            });
        using var admin = new RegistryHttp(required.Url);
        await open.WaitForAsync(admin.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
        await required.WaitForAsync(admin.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
        var tokens = await CreateTokensAsync(admin, bootstrap, _options.AuthTokens, cancellationToken);

        var modes = new[]
        {
            new AuthMode("off", open, () => new RegistryHttp(open.Url)),
            new AuthMode("on", required, () => new RegistryHttp(required.Url, tokens)),
        };
        foreach (var mode in modes)
        {
            using var http = mode.Http();
            await WarmUpAsync(http, http, cancellationToken);
            // The wake-up path compiled before it is timed, as in the main phases.
            using var small = mode.Http();
            await FanOutAsync(small, mode.Node, null, 50, new BenchmarkResult { StartedAt = result.StartedAt, Machine = result.Machine, Settings = result.Settings }, false, cancellationToken, $"-auth-{mode.Name}");
        }

        var rounds = new List<AuthRound>();
        for (var round = 1; round <= _options.RegistrationRounds; round++)
        {
            foreach (var mode in round % 2 == 1 ? modes : modes.Reverse())
            {
                using var http = mode.Http();
                var registration = await RegistrationAsync($"auth{mode.Name}{round}", _options.Concurrency, http, null, mode.Node, null, cancellationToken);
                var heartbeats = await HeartbeatsAsync(http, null, mode.Node, null, cancellationToken);
                var fanOuts = new List<FanOutResult>();
                foreach (var consumers in _options.FanOutConsumers.Order())
                {
                    // A pool of its own, closed afterwards, so parked connections do not pile up.
                    using var polls = mode.Http();
                    fanOuts.Add(await FanOutAsync(polls, mode.Node, null, consumers, result, false, cancellationToken, $"-auth-{mode.Name}-{round}"));
                }

                rounds.Add(new AuthRound(round, mode.Name, registration, heartbeats, fanOuts));
                await _log.WriteLineAsync(string.Create(
                    CultureInfo.InvariantCulture,
                    $"  round {round}, auth {mode.Name}: registrations {registration.PerSecond}/s (errors {registration.Errors}), heartbeats {heartbeats.PerSecond}/s (errors {heartbeats.Errors}), fan-out p99 {string.Join(", ", fanOuts.Select(f => $"{f.Consumers}: {f.DelayMs.P99} ms (missed {f.Missed})"))}"));
            }
        }

        var off = rounds.Where(r => r.Mode == "off").ToList();
        var on = rounds.Where(r => r.Mode == "on").ToList();
        var figures = new List<AuthFigure>
        {
            Figure("Registrations/s (concurrency " + _options.Concurrency.ToString(CultureInfo.InvariantCulture) + ")", off, on, r => r.Registration.PerSecond, higherIsBetter: true),
            Figure("Heartbeats/s (concurrency " + _options.Concurrency.ToString(CultureInfo.InvariantCulture) + ")", off, on, r => r.Heartbeats.PerSecond, higherIsBetter: true),
        };
        foreach (var consumers in _options.FanOutConsumers.Order())
        {
            figures.Add(Figure(
                string.Create(CultureInfo.InvariantCulture, $"Fan-out p99 to {consumers:N0} (ms)"),
                off, on, r => r.FanOut.First(f => f.Consumers == consumers).DelayMs.P99, higherIsBetter: false));
        }

        return new AuthComparisonResult(tokens.Count, _options.RegistrationRounds, figures, rounds);
    }

    private sealed record AuthMode(string Name, ServerNode Node, Func<RegistryHttp> Http);

    /// <summary>The medians of each mode's rounds, and how much slower access control makes it (1.0 = the same).</summary>
    private static AuthFigure Figure(string name, List<AuthRound> off, List<AuthRound> on, Func<AuthRound, double> value, bool higherIsBetter)
    {
        var offMedian = value(Median(off, value));
        var onMedian = value(Median(on, value));
        var cost = higherIsBetter ? offMedian / onMedian : onMedian / offMedian;
        return new AuthFigure(name, offMedian, onMedian, Math.Round(cost, 3), off.Select(value).ToArray(), on.Select(value).ToArray());
    }

    /// <summary>Tokens that may register and subscribe to this tool's applications, made through <c>POST /v1/tokens</c>; returns once the node accepts the last one.</summary>
    private static async Task<IReadOnlyList<string>> CreateTokensAsync(RegistryHttp admin, string bootstrap, int count, CancellationToken cancellationToken)
    {
        var tokens = new List<string>(count);
        for (var i = 0; i < count; i++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, new Uri("/v1/tokens", UriKind.Relative))
            {
                Content = JsonContent.Create(new
                {
                    description = string.Create(CultureInfo.InvariantCulture, $"benchmark load client {i}"),
                    register = new[] { $"{BenchDatabase.Prefix}*" },
                    subscribe = new[] { $"{BenchDatabase.Prefix}*" },
                }),
            };
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", bootstrap);
            using var response = await admin.Client.SendAsync(request, cancellationToken);
            var body = await response.Content.ReadAsStringAsync(cancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                throw new InvalidOperationException($"POST /v1/tokens answered {(int)response.StatusCode}: {body}");
            }

            using var document = JsonDocument.Parse(body);
            tokens.Add(document.RootElement.GetProperty("token").GetString()!);
        }

        // A comparison against a node that lets anyone in would measure nothing.
        using (var anonymous = new RegistryHttp(admin.BaseAddress))
        {
            var refused = await anonymous.SubscribeAsync($"{BenchDatabase.Prefix}token-check", null, 0, null, cancellationToken);
            if (refused.Status != System.Net.HttpStatusCode.Unauthorized)
            {
                throw new InvalidOperationException($"The node meant to require access control answered {(int)refused.Status} without a token.");
            }
        }

        // The node learns of new tokens through the change feed: wait until it takes the last one.
        using var check = new RegistryHttp(admin.BaseAddress, [tokens[^1]]);
        for (var attempt = 0; ; attempt++)
        {
            var answer = await check.SubscribeAsync($"{BenchDatabase.Prefix}token-check", null, 0, null, cancellationToken);
            if (answer.Status == System.Net.HttpStatusCode.OK)
            {
                return tokens;
            }

            if (attempt == 500)
            {
                throw new InvalidOperationException($"The node still refuses the tokens it created ({(int)answer.Status}).");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
        }
    }
}
