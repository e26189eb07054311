using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Registry.OperationsTests.Infrastructure;

namespace Registry.OperationsTests;

/// <summary>
/// The README's Walkthrough and Runbook cannot rot: every <c>```sh</c> block under those
/// headings is run with bash against a live registry (its base URL put in place of
/// <c>http://localhost:5080</c>), must exit 0, and must print what its heading promises.
/// </summary>
[Collection(LiveRegistryDefinition.Name)]
public sealed partial class RunbookTests(LiveRegistry registry)
{
    private const string DocumentedBaseAddress = "http://localhost:5080";

    /// <summary>What each block must print, by its ### heading; a block without one fails the test.</summary>
    private static readonly Dictionary<string, string[]> Expectations = new(StringComparer.Ordinal)
    {
        ["1. Register a provider"] = ["\"application\":\"test_provider1\"", "\"ttl\":60", "\"expires\":\""],
        ["2. Subscribe"] = ["\"version\":\"", "\"addr\":\"127.0.0.1:8080\""],
        ["3. Long poll"] = ["\"application\":\"test_provider1\"", "\"application\":\"test_provider2\""],
        ["4. Heartbeat"] = ["\"ttl\":60", "\"meta\":{\"cluster\":\"small\",\"idc\":\"shanghai\",\"tag\":\"read\"}"],
        ["5. Unregister"] = ["204\n204"],
        ["Check liveness and readiness"] = ["\"status\":\"alive\"", "\"status\":\"ready\""],
        ["Register an instance by hand"] = ["\"application\":\"provider_test\"", "\"ttl\":300"],
        ["Register with a probe"] = ["\"probe\":{\"kind\":\"http\",\"path\":\"/healthz\",\"interval\":10}", "{\"nodes\":[{\"id\":\""],
        ["List the applications"] = ["{\"application\":\"provider_test\",\"instances\":1}"],
        ["Inspect one application"] = ["HTTP/1.1 200", "ETag: \"", "\"addr\":\"127.0.0.1:8080\""],
        ["Watch an application with a long poll"] = ["HTTP/1.1 304", "ETag: \""],
        ["See who watches an application"] = ["{\"application\":\"provider_test\",\"nodes\":[{\"node\":\""],
        ["Unregister an instance by hand"] = ["204"],
        ["Drain an instance before stopping it"] = ["{\"delivered\":0,\"pending\":0,\"nodes\":1,\"complete\":true}"],
        ["Hold a session with curl -N"] = ["event: lease", "\"addr\":\"127.0.0.1:8081\"", "\"endpoints\":[]"],
        ["Read the metrics"] = ["registry_registrations_total{"],
    };

    [Fact]
    public Task TheWalkthroughRunsAsWritten() => RunSectionAsync("Walkthrough");

    [Fact]
    public Task TheRunbookRunsAsWritten() => RunSectionAsync("Runbook");

    private async Task RunSectionAsync(string section)
    {
        var blocks = Blocks(await File.ReadAllTextAsync(Repository.PathOf("README.md")), section);
        Assert.NotEmpty(blocks);

        foreach (var (heading, script) in blocks)
        {
            Assert.True(Expectations.TryGetValue(heading, out var expected), $"README block under \"### {heading}\" has no expectation in {nameof(RunbookTests)}.");
            var (exitCode, output) = await BashAsync(script.Replace(DocumentedBaseAddress, registry.BaseAddress, StringComparison.Ordinal));
            Assert.True(exitCode == 0, $"\"### {heading}\" exited {exitCode}:\n{output}");
            foreach (var text in expected)
            {
                Assert.True(output.Contains(text, StringComparison.Ordinal), $"\"### {heading}\" did not print {text}:\n{output}");
            }
        }
    }

    /// <summary>The sh blocks of one ## section, each with the ### heading above it.</summary>
    private static List<(string Heading, string Script)> Blocks(string readme, string section)
    {
        var lines = readme.ReplaceLineEndings("\n").Split('\n');
        var blocks = new List<(string, string)>();
        string? heading = null;
        var inSection = false;
        StringBuilder? block = null;
        foreach (var line in lines)
        {
            if (block is not null)
            {
                if (line.StartsWith("```", StringComparison.Ordinal))
                {
                    blocks.Add((heading ?? section, block.ToString()));
                    block = null;
                }
                else
                {
                    block.Append(line).Append('\n');
                }
            }
            else if (line.StartsWith("## ", StringComparison.Ordinal))
            {
                inSection = line[3..].Trim() == section;
                heading = null;
            }
            else if (inSection && line.StartsWith("### ", StringComparison.Ordinal))
            {
                heading = line[4..].Trim();
            }
            else if (inSection && line.Trim() == "```sh")
            {
                block = new StringBuilder();
            }
        }

        return blocks;
    }

    private async Task<(int ExitCode, string Output)> BashAsync(string script)
    {
        var start = new ProcessStartInfo("bash", ["-euo", "pipefail", "-c", script])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // The watch command's long poll would hold for the documented 55 s; a short wait
        // still exercises the hold and its 304.
        start.Environment["WAIT"] = "1";
        start.Environment["TOKEN"] = registry.Token;
        using var process = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        var stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        var output = await stdout + await stderr;
        return (process.ExitCode, HeaderLineEndings().Replace(output, "\n"));
    }

    /// <summary>curl -i prints header lines with CRLF.</summary>
    [GeneratedRegex("\r\n")]
    private static partial Regex HeaderLineEndings();
}
