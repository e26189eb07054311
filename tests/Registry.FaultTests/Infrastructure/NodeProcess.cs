using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Registry.FaultTests.Infrastructure;

/// <summary>
/// A registry node as its own <c>dotnet Registry.Server.dll</c> process, so that a test can
/// kill it with SIGKILL (no shutdown hook runs, a batch in flight is cut) and start it again
/// on the same port and configuration.
/// </summary>
public sealed class NodeProcess : IAsyncDisposable
{
    private readonly string _serverDll;
    private readonly IReadOnlyDictionary<string, string> _environment;
    private readonly string _logFile;
    private Process? _process;

    public NodeProcess(string name, string serverDll, IReadOnlyDictionary<string, string> environment, string logFolder)
    {
        Name = name;
        _serverDll = serverDll;
        _environment = environment;
        Url = new Uri($"http://127.0.0.1:{FreePort()}");
        Directory.CreateDirectory(logFolder);
        _logFile = Path.Combine(logFolder, $"{name}.log");
    }

    public string Name { get; }

    public Uri Url { get; }

    public bool Running => _process is { HasExited: false };

    /// <summary>
    /// Starts the process and waits until <c>/healthz</c> answers. A node that exits at start
    /// (its first connection timed out on a busy machine: it fails fast by design) is started
    /// again, twice at most.
    /// </summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            Launch();
            try
            {
                await WaitForAsync("/healthz", TimeSpan.FromSeconds(60), cancellationToken);
                return;
            }
            catch (InvalidOperationException) when (attempt < 3 && !Running)
            {
                await KillAsync();
            }
        }
    }

    private void Launch()
    {
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = Path.GetDirectoryName(_serverDll)!,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(_serverDll);
        start.ArgumentList.Add("--urls");
        start.ArgumentList.Add(Url.ToString().TrimEnd('/'));
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        foreach (var (key, value) in _environment)
        {
            start.Environment[key] = value;
        }

        var log = new StreamWriter(_logFile, append: true) { AutoFlush = true };
        log.WriteLine($"--- started {DateTimeOffset.UtcNow:O}");
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, e) => Write(log, e.Data);
        process.ErrorDataReceived += (_, e) => Write(log, e.Data);
        process.Exited += (_, _) => log.Dispose();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
    }

    /// <summary>SIGKILL: nothing of the node's shutdown runs.</summary>
    public async Task KillAsync()
    {
        if (_process is { } process)
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None);
            }

            process.Dispose();
            _process = null;
        }
    }

    /// <summary>Waits until <paramref name="path"/> answers 200, failing if the process exits first.</summary>
    public async Task WaitForAsync(string path, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var http = new HttpClient { BaseAddress = Url, Timeout = TimeSpan.FromSeconds(3) };
        var began = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(began) < timeout)
        {
            if (_process is not { HasExited: false })
            {
                throw new InvalidOperationException($"Node {Name} is not running ({FirstError()}); see {_logFile}.");
            }

            try
            {
                using var response = await http.GetAsync(new Uri(path, UriKind.Relative), cancellationToken);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }
            catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                // This attempt took too long; try again while time is left.
            }

            await Task.Delay(TimeSpan.FromMilliseconds(50), cancellationToken);
        }

        throw new TimeoutException($"Node {Name} did not answer {path} within {timeout}; see {_logFile}.");
    }

    public async ValueTask DisposeAsync() => await KillAsync();

    /// <summary>The first exception the node logged, so a failed start says why without opening the log.</summary>
    private string FirstError()
    {
        try
        {
            using var stream = new FileStream(_logFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd().Split('\n').FirstOrDefault(l => l.Contains("Exception", StringComparison.Ordinal))?.Trim() ?? "no exception logged";
        }
        catch (IOException)
        {
            return "no log";
        }
    }

    private static void Write(StreamWriter log, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (log)
        {
            try
            {
                log.WriteLine(line);
            }
            catch (ObjectDisposedException)
            {
                // The process has exited; its last lines raced the close.
            }
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
