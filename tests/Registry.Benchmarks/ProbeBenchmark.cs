using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Registry.Benchmarks;

/// <summary>
/// Registry probes (<c>--probes N</c>): N instances registered with <c>probe=http</c> on one
/// node, each at its own loopback address (127.1.x.y) of a target this tool serves on one port.
/// After every instance is registered and a full interval has passed, a window measures the
/// probes per second the target received (goal N / interval), the node's CPU in that window
/// (goal ≤ 10% of a core) and, reported without a goal, the lateness of the probes: the time between two probes of one
/// instance minus the interval, as the target saw them.
/// </summary>
public sealed class ProbeBenchmark(BenchmarkOptions options, TextWriter log)
{
    private const int AddressesPerBlock = 250;
    private const double CpuGoalPercent = 10;
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>The figures of one run, as written to the JSON results.</summary>
    public sealed record ProbeResult(
        int Instances, int IntervalSeconds, double WindowSeconds, long Probes, double ProbesPerSecond, double ExpectedPerSecond,
        double NodeCpuPercent, Distribution LatenessMs, int InstancesNotProbed, int RegisterErrors, string Machine);

    public async Task<ProbeResult> RunAsync(CancellationToken cancellationToken)
    {
        var instances = options.Probes;
        var interval = options.ProbeIntervalSeconds;
        if (instances > AddressesPerBlock * 256)
        {
            throw new ArgumentException($"--probes takes at most {AddressesPerBlock * 256} instances (one loopback address each).");
        }

        var work = options.WorkDirectory ?? Path.Combine(Path.GetTempPath(), $"registry-probe-bench-{Environment.ProcessId}");
        Directory.CreateDirectory(work);
        await using var database = await BenchDatabase.OpenAsync(options.ConnectionString, work, durable: !options.NoFsync, log, cancellationToken);
        // Probing is off until networks are listed, and loopback only counts when listed explicitly.
        var environment = new Dictionary<string, string>(options.NodeEnvironment, StringComparer.Ordinal)
        {
            ["Registry__Probes__AllowedNetworks__0"] = "127.0.0.0/8",
        };
        await using var node = ServerNode.Start("probes", ServerLocator.Find(options.ServerDll), database.ConnectionString, work, environment);
        using var http = new RegistryHttp(node.Url);
        await node.WaitForAsync(http.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);

        using var target = new ProbeTarget(instances);
        using var stopTarget = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var serving = target.ServeAsync(stopTarget.Token);
        try
        {
            var errors = await RegisterAllAsync(http, instances, interval, target.Port, cancellationToken);
            await log.WriteLineAsync($"  {instances} probed instances registered ({errors} errors); waiting one interval and the scheduler's refresh");
            // Every instance is owned and probed once before the window opens.
            await Task.Delay(TimeSpan.FromSeconds(interval + 4), cancellationToken);

            var cpuBefore = node.Sample();
            var started = Stopwatch.GetTimestamp();
            target.Record(true);
            await Task.Delay(options.ProbeWindow, cancellationToken);
            target.Record(false);
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            var cpuAfter = node.Sample();

            var cpuPercent = cpuBefore is null || cpuAfter is null ? 0 : Math.Round(100 * (cpuAfter.CpuSeconds - cpuBefore.CpuSeconds) / seconds, 2);
            var result = new ProbeResult(
                instances, interval, Math.Round(seconds, 2), target.Probes, Math.Round(target.Probes / seconds, 1), (double)instances / interval,
                cpuPercent, Distribution.Of(target.Lateness(interval)), target.NotProbed, errors,
                $"{Environment.ProcessorCount} cores, {Environment.OSVersion}");
            await WriteAsync(result, cancellationToken);
            return result;
        }
        finally
        {
            await stopTarget.CancelAsync();
            await serving;
            await database.DeleteBenchRowsAsync(cancellationToken);
        }
    }

    /// <summary>The address of instance <paramref name="index"/>: one loopback address each, 127.1.0.1 onwards.</summary>
    public static string Address(int index, int port) =>
        string.Create(CultureInfo.InvariantCulture, $"127.1.{index / AddressesPerBlock}.{(index % AddressesPerBlock) + 1}:{port}");

    private async Task<int> RegisterAllAsync(RegistryHttp http, int instances, int interval, int port, CancellationToken cancellationToken)
    {
        var errors = 0;
        var query = $"/v1/register?ttl={interval * 6}&probe=http&probePath=/healthz&probeInterval={interval}";
        await Parallel.ForAsync(0, instances, new ParallelOptions { MaxDegreeOfParallelism = options.Concurrency, CancellationToken = cancellationToken }, async (i, token) =>
        {
            var body = RegistryHttp.Provider($"{BenchDatabase.Prefix}probes-{i % 100}", Address(i, port));
            using var content = new StringContent(body, Encoding.UTF8, "application/json");
            using var response = await http.Client.PostAsync(new Uri(query, UriKind.Relative), content, token);
            if (!response.IsSuccessStatusCode && Interlocked.Increment(ref errors) == 1)
            {
                await log.WriteLineAsync($"  register answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(token)}");
            }
        });
        return errors;
    }

    private async Task WriteAsync(ProbeResult result, CancellationToken cancellationToken)
    {
        var text = Markdown(result);
        var (json, markdown) = options.ResultFiles;
        if (json is not null)
        {
            await File.WriteAllTextAsync(json, JsonSerializer.Serialize(result, Indented), cancellationToken);
        }

        if (markdown is not null)
        {
            await File.WriteAllTextAsync(markdown, text, cancellationToken);
        }

        await log.WriteLineAsync(text);
    }

    public static string Markdown(ProbeResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        static string Met(bool met) => met ? "yes" : "**no**";
        var text = new StringBuilder();
        text.AppendLine(CultureInfo.InvariantCulture, $"# Probes: {result.Instances} probed instances at probeInterval={result.IntervalSeconds} on one node ({DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC)");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Machine: {result.Machine}; window {result.WindowSeconds} s; {result.RegisterErrors} register errors; {result.InstancesNotProbed} instances not probed in the window.");
        text.AppendLine();
        text.AppendLine("| figure | value | target | met |");
        text.AppendLine("|---|---|---|---|");
        text.AppendLine(CultureInfo.InvariantCulture, $"| probes/s received by the target | {result.ProbesPerSecond} ({result.Probes} probes) | ≥ {result.ExpectedPerSecond * 0.98:0.#} (N/interval, 2% slack) | {Met(result.ProbesPerSecond >= result.ExpectedPerSecond * 0.98)} |");
        text.AppendLine(CultureInfo.InvariantCulture, $"| node CPU (% of one core) | {result.NodeCpuPercent} | ≤ {CpuGoalPercent} | {Met(result.NodeCpuPercent <= CpuGoalPercent)} |");
        text.AppendLine(CultureInfo.InvariantCulture, $"| probe lateness p99 (ms; interval between probes − {result.IntervalSeconds} s) | {result.LatenessMs.P99} (p50 {result.LatenessMs.P50}, max {result.LatenessMs.Max}, {result.LatenessMs.Count} intervals) | reported (the issue sets no goal) | - |");
        return text.ToString();
    }

    /// <summary>
    /// The probed side: one listener on all addresses (Linux answers the whole of 127.0.0.0/8 on
    /// it), answering every request with an empty 200 and noting which loopback address was asked.
    /// </summary>
    private sealed class ProbeTarget : IDisposable
    {
        private static readonly byte[] Ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"u8.ToArray();
        private readonly TcpListener _listener = new(IPAddress.Any, 0);
        private readonly long[] _last;
        private readonly bool[] _probed;
        private readonly ConcurrentQueue<long> _intervals = new();
        private volatile bool _recording;
        private long _probes;

        public ProbeTarget(int instances)
        {
            _last = new long[instances];
            _probed = new bool[instances];
            _listener.Start(4096);
        }

        public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

        public long Probes => Interlocked.Read(ref _probes);

        public int NotProbed => _probed.Count(p => !p);

        public void Record(bool on) => _recording = on;

        /// <summary>Each recorded interval between two probes of one instance, minus the interval, in ms.</summary>
        public List<double> Lateness(int intervalSeconds) =>
            _intervals.Select(ticks => (ticks * 1000.0 / Stopwatch.Frequency) - (intervalSeconds * 1000.0)).ToList();

        public async Task ServeAsync(CancellationToken cancellationToken)
        {
            var connections = new List<Task>();
            try
            {
                while (true)
                {
                    var socket = await _listener.AcceptSocketAsync(cancellationToken);
                    connections.Add(AnswerAsync(socket, cancellationToken));
                    connections.RemoveAll(c => c.IsCompleted);
                }
            }
            catch (OperationCanceledException)
            {
                // Stopped.
            }

            await Task.WhenAll(connections);
        }

        private async Task AnswerAsync(Socket socket, CancellationToken cancellationToken)
        {
            using (socket)
            {
                var buffer = new byte[2048];
                var filled = 0;
                try
                {
                    while (true)
                    {
                        var read = await socket.ReceiveAsync(buffer.AsMemory(filled), cancellationToken);
                        if (read == 0)
                        {
                            return;
                        }

                        filled += read;
                        var end = buffer.AsSpan(0, filled).IndexOf("\r\n\r\n"u8);
                        if (end < 0)
                        {
                            if (filled == buffer.Length)
                            {
                                return;
                            }

                            continue;
                        }

                        Arrived(socket.LocalEndPoint as IPEndPoint);
                        await socket.SendAsync(Ok, cancellationToken);
                        // Bodies are never sent by a probe; keep what follows the head for the next request.
                        var rest = filled - (end + 4);
                        buffer.AsSpan(end + 4, rest).CopyTo(buffer);
                        filled = rest;
                    }
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException)
                {
                    // The prober hung up or the run ended.
                }
            }
        }

        private void Arrived(IPEndPoint? local)
        {
            if (local is null)
            {
                return;
            }

            Span<byte> bytes = stackalloc byte[4];
            if (!local.Address.MapToIPv4().TryWriteBytes(bytes, out _) || bytes[0] != 127 || bytes[1] != 1 || bytes[3] == 0)
            {
                return;
            }

            var index = (bytes[2] * AddressesPerBlock) + bytes[3] - 1;
            if (index >= _last.Length)
            {
                return;
            }

            var now = Stopwatch.GetTimestamp();
            var previous = Interlocked.Exchange(ref _last[index], now);
            if (!_recording)
            {
                return;
            }

            Interlocked.Increment(ref _probes);
            _probed[index] = true;
            if (previous != 0)
            {
                _intervals.Enqueue(now - previous);
            }
        }

        public void Dispose() => _listener.Dispose();
    }
}
