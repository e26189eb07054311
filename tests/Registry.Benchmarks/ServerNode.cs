using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Registry.Benchmarks;

/// <summary>
/// A registry node: either a child process this tool started (so its memory and CPU can be
/// read from /proc) or a node someone else runs (--url, with --server-pid for /proc figures).
/// </summary>
internal sealed class ServerNode : IAsyncDisposable
{
    private readonly Process? _process;
    private readonly bool _owned;
    private readonly StreamWriter? _log;
    private bool _disposed;

    private ServerNode(string name, Uri url, Process? process, bool owned, StreamWriter? log, DateTimeOffset startedAt)
    {
        Name = name;
        Url = url;
        _process = process;
        _owned = owned;
        _log = log;
        StartedAt = startedAt;
    }

    public string Name { get; }

    public Uri Url { get; }

    /// <summary>When the process was started (for cold-start timing).</summary>
    public DateTimeOffset StartedAt { get; }

    public long StartTimestamp { get; private init; }

    public bool HasProcess => _process is not null;

    /// <summary>The process id, when there is a process to read.</summary>
    public int? ProcessId => _process?.Id;

    /// <summary>Started by this tool, so it may stop it.</summary>
    public bool Owned => _owned;

    public static ServerNode Existing(string name, Uri url, int? pid) =>
        new(name, url, pid is { } id ? Process.GetProcessById(id) : null, owned: false, log: null, DateTimeOffset.UtcNow);

    /// <summary>Starts <c>dotnet Registry.Server.dll</c> on a free loopback port against the database.</summary>
    public static ServerNode Start(string name, string serverDll, string connectionString, string logFolder, IReadOnlyDictionary<string, string> environment)
    {
        var port = FreePort();
        var url = new Uri($"http://127.0.0.1:{port}");
        var start = new ProcessStartInfo("dotnet")
        {
            WorkingDirectory = Path.GetDirectoryName(serverDll)!,
        };
        start.ArgumentList.Add(serverDll);
        start.ArgumentList.Add("--urls");
        start.ArgumentList.Add(url.ToString().TrimEnd('/'));
        start.Environment["ConnectionStrings__Registry"] = connectionString;
        start.Environment["ASPNETCORE_ENVIRONMENT"] = "Production";
        start.Environment["Logging__LogLevel__Default"] = "Warning";
        // Released polls need not be spread when the tool stops a node.
        start.Environment["Registry__Subscriptions__ShutdownSpread"] = "00:00:00";
        // Every parked poll of this tool comes from one address: the per-client cap (1,000 by
        // default, against one client hogging a node) would refuse the fan-out's ten thousand.
        start.Environment["Registry__Limits__MaxParkedPerClient"] = "1000000";
        start.Environment["Registry__Limits__MaxParked"] = "1000000";
        start.Environment["Registry__Network__MaxConnectionsPerClient"] = "1000000";
        // Measured without credentials unless the caller's environment turns authentication on.
        start.Environment["Registry__Auth__Mode"] = "Open";
        foreach (var (key, value) in environment)
        {
            start.Environment[key] = value;
        }

        return Launch(name, url, start, logFolder);
    }

    /// <summary>
    /// Starts another program as a node of this tool (etcd, the peer it is compared with), its
    /// output in <c>name.log</c>; it is stopped on dispose like the registry's nodes.
    /// </summary>
    public static ServerNode Launch(string name, Uri url, ProcessStartInfo start, string logFolder)
    {
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        start.UseShellExecute = false;
        Directory.CreateDirectory(logFolder);
        var log = new StreamWriter(Path.Combine(logFolder, $"{name}.log"), append: true) { AutoFlush = true };
        var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Write(log, e.Data);
        process.ErrorDataReceived += (_, e) => Write(log, e.Data);
        var startedAt = DateTimeOffset.UtcNow;
        var timestamp = Stopwatch.GetTimestamp();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new ServerNode(name, url, process, owned: true, log, startedAt) { StartTimestamp = timestamp };
    }

    private static void Write(StreamWriter log, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (log)
        {
            log.WriteLine(line);
        }
    }

    /// <summary>Resident memory and CPU time used so far, read from /proc via <see cref="Process"/>.</summary>
    public ProcessSample? Sample()
    {
        if (_process is null || _disposed)
        {
            return null;
        }

        _process.Refresh();
        return new ProcessSample(_process.WorkingSet64, _process.TotalProcessorTime.TotalSeconds);
    }

    /// <summary>Waits until <paramref name="path"/> answers 200, failing if the process exits first.</summary>
    public async Task WaitForAsync(HttpClient http, string path, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var began = Stopwatch.GetTimestamp();
        while (Stopwatch.GetElapsedTime(began) < timeout)
        {
            if (_process is { HasExited: true } && _owned)
            {
                throw new InvalidOperationException($"Node {Name} exited with {_process.ExitCode} before {path} answered; see its log.");
            }

            try
            {
                using var attempt = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                attempt.CancelAfter(TimeSpan.FromSeconds(5));
                using var response = await http.GetAsync(new Uri(Url, path), attempt.Token);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                // This attempt took too long; try again while time is left.
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
        }

        throw new TimeoutException($"Node {Name} did not answer {path} within {timeout}.");
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_owned && _process is not null)
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync(CancellationToken.None);
            }

            _process.Dispose();
        }

        if (_log is not null)
        {
            await _log.DisposeAsync();
        }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
