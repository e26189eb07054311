using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Registry.Benchmarks;

/// <summary>
/// Sessions on one node (<c>--sessions N</c>): N sessions held open on raw sockets (no HttpClient,
/// whose per-connection cost would be the generator's, not the node's), the node's memory per
/// session; then subscribers parked on one session's application while that session's socket is
/// reset, K times: the time from the reset to every subscriber's new answer.
/// </summary>
public sealed partial class Benchmark
{
    /// <summary>Sessions per application: subscribers' answers stay small (a hundred instances).</summary>
    private const int SessionsPerApplication = 100;

    private static readonly byte[] LeaseEvent = "event: lease"u8.ToArray();

    private async Task<SessionResult> SessionsAsync(string serverDll, BenchDatabase database, string work, BenchmarkResult result, CancellationToken cancellationToken)
    {
        const int Spare = 2_000;
        var asked = _options.SessionCount;
        var wanted = (ulong)asked + Spare;
        var generatorLimit = FileLimit.Raise(0, wanted);
        await using var node = ServerNode.Start("node-sessions", serverDll, database.ConnectionString, work, _options.NodeEnvironment);
        var nodeLimit = node.ProcessId is { } pid ? FileLimit.Raise(pid, wanted) : 0;
        var limit = Math.Min(generatorLimit, nodeLimit);
        var count = limit == 0 ? asked : (int)Math.Min((ulong)asked, limit > Spare ? limit - Spare : 0);
        if (count < asked)
        {
            var note = string.Create(CultureInfo.InvariantCulture, $"Sessions: {asked:N0} asked for, {count:N0} measured — the open-file limit could not be raised above {limit}.");
            result.Notes.Add(note);
            await _log.WriteLineAsync(note);
        }

        // 20,000 connections per source address, well inside the ephemeral range.
        var sources = Enumerable.Range(2, Math.Max(1, (count + 19_999) / 20_000)).Select(i => new IPAddress(new byte[] { 127, 0, 0, (byte)i })).ToArray();
        using var http = new RegistryHttp(node.Url);
        await node.WaitForAsync(http.Client, "/readyz", TimeSpan.FromSeconds(90), cancellationToken);
        await _log.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"{count:N0} sessions on one node from {sources.Length} source address(es)…"));

        // A few sessions opened, reset and subscribed to first, so the paths are compiled before anything is timed.
        var warm = await OpenSessionsAsync(node.Url, sources, "sessions-warm", 20, cancellationToken);
        await KillAndWakeAsync(http, warm, 3, Math.Min(10, _options.SessionSubscribers), "sessions-warm", cancellationToken);
        Close(warm);
        await Task.Delay(TimeSpan.FromSeconds(2), cancellationToken);

        var before = node.Sample();
        var opening = Stopwatch.GetTimestamp();
        var sessions = await OpenSessionsAsync(node.Url, sources, "sessions", count, cancellationToken);
        var secondsToOpen = Stopwatch.GetElapsedTime(opening).TotalSeconds;
        // Let the registrations' batches and first keep-alives settle before memory is read.
        await Task.Delay(TimeSpan.FromSeconds(_options.Smoke ? 1 : 5), cancellationToken);
        var open = node.Sample();
        var bytesPerSession = before is null || open is null ? 0 : (double)(open.RssBytes - before.RssBytes) / count;
        await _log.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  open in {secondsToOpen:0.0} s; {bytesPerSession / 1024:0.0} KiB per session (RSS {before?.RssBytes / 1048576.0:0} → {open?.RssBytes / 1048576.0:0} MiB)"));

        try
        {
            var kills = Math.Min(_options.SessionKills, count);
            var (woken, missed) = await KillAndWakeAsync(http, sessions, kills, _options.SessionSubscribers, "sessions", cancellationToken);
            await _log.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"  reset → all {_options.SessionSubscribers} subscribers woken: p50 {woken.P50} ms, p99 {woken.P99} ms, max {woken.Max} ms; missed {missed}"));
            return new SessionResult(
                asked, count, sources.Length, secondsToOpen, before?.RssBytes ?? 0, open?.RssBytes ?? 0, bytesPerSession,
                kills, _options.SessionSubscribers, missed, woken);
        }
        finally
        {
            Close(sessions);
        }
    }

    /// <summary>Opens <paramref name="count"/> sessions, a hundred per application, and returns once every one has had its lease event.</summary>
    private async Task<Socket[]> OpenSessionsAsync(Uri server, IPAddress[] sources, string name, int count, CancellationToken cancellationToken)
    {
        var sockets = new Socket[count];
        var next = -1;
        async Task OpenAsync()
        {
            for (var i = Interlocked.Increment(ref next); i < count; i = Interlocked.Increment(ref next))
            {
                var body = Encoding.UTF8.GetBytes(RegistryHttp.Provider(SessionApplication(name, i), SessionAddr(i), new Dictionary<string, string>()));
                sockets[i] = await OpenSessionAsync(server, sources[i % sources.Length], LeanConnection.Post(server, "/v1/sessions?ttl=15", body), cancellationToken);
            }
        }

        await Task.WhenAll(Enumerable.Range(0, Math.Min(_options.Concurrency, count)).Select(_ => OpenAsync()));
        return sockets;
    }

    private static async Task<Socket> OpenSessionAsync(Uri server, IPAddress source, byte[] request, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.Bind(new IPEndPoint(source, 0));
            await socket.ConnectAsync(IPAddress.Parse(server.Host), server.Port, cancellationToken);
            await socket.SendAsync(request, SocketFlags.None, cancellationToken);
            var buffer = new byte[4096];
            var received = 0;
            while (buffer.AsSpan(0, received).IndexOf(LeaseEvent) < 0)
            {
                if (received == buffer.Length)
                {
                    throw new InvalidDataException("No lease event in the session's first 4 KiB.");
                }

                var read = await socket.ReceiveAsync(buffer.AsMemory(received), SocketFlags.None, cancellationToken);
                if (read == 0)
                {
                    throw new IOException($"The node closed a session before its lease event: {Encoding.ASCII.GetString(buffer, 0, received)}");
                }

                received += read;
            }

            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Resets sessions one at a time (<paramref name="kills"/> of them, from the first), each with
    /// <paramref name="subscribers"/> polls parked on its application; the time from the reset to the
    /// last poll's changed answer. A poll that has no changed answer within 10 s counts as missed.
    /// </summary>
    private static async Task<(Distribution WokenMs, int Missed)> KillAndWakeAsync(
        RegistryHttp http, Socket[] sessions, int kills, int subscribers, string name, CancellationToken cancellationToken)
    {
        var woken = new List<double>(kills);
        var missed = 0;
        for (var k = 0; k < kills; k++)
        {
            var application = SessionApplication(name, k);
            var version = (await http.SubscribeAsync(application, null, 0, null, cancellationToken)).Version
                ?? throw new InvalidOperationException("The subscribe answer carried no ETag.");
            using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var sent = 0;
            var polls = Enumerable.Range(0, subscribers)
                .Select(_ => http.SubscribeAsync(application, version, PollWaitSeconds, () => Interlocked.Increment(ref sent), giveUp.Token))
                .ToArray();
            while (Volatile.Read(ref sent) < subscribers)
            {
                await Task.Delay(5, cancellationToken);
            }

            // The last bodies are on the wire; give the node a moment to park them.
            await Task.Delay(TimeSpan.FromMilliseconds(100), cancellationToken);
            var session = sessions[k];
            session.LingerState = new LingerOption(true, 0); // close with a reset, as a crashed provider's kernel would
            var closedAt = Stopwatch.GetTimestamp();
            session.Dispose();

            giveUp.CancelAfter(TimeSpan.FromSeconds(10));
            try
            {
                await Task.WhenAll(polls);
            }
            catch (Exception e) when (e is OperationCanceledException or HttpRequestException)
            {
                // Counted below.
            }

            var answered = polls.Where(p => p.IsCompletedSuccessfully && p.Result.Status == HttpStatusCode.OK && p.Result.Version != version).ToList();
            missed += subscribers - answered.Count;
            if (answered.Count > 0)
            {
                woken.Add(answered.Max(p => Stopwatch.GetElapsedTime(closedAt, p.Result.AnsweredAt).TotalMilliseconds));
            }
        }

        return (Distribution.Of(woken), missed);
    }

    private static void Close(Socket[] sessions)
    {
        foreach (var socket in sessions)
        {
            socket?.Dispose();
        }
    }

    private static string SessionApplication(string name, int session) =>
        string.Create(CultureInfo.InvariantCulture, $"{BenchDatabase.Prefix}{name}-{session / SessionsPerApplication}");

    private static string SessionAddr(int session) =>
        string.Create(CultureInfo.InvariantCulture, $"10.{(session >> 16) & 255}.{(session >> 8) & 255}.{session & 255}:80");

    internal static void EvaluateSessions(List<TargetCheck> targets, SessionResult sessions, bool smoke)
    {
        var kib = sessions.BytesPerSession / 1024;
        var noProcess = sessions.RssOpenBytes == 0;
        targets.Add(new TargetCheck(
            string.Create(CultureInfo.InvariantCulture, $"Sessions: memory per open session ({sessions.Sessions:N0} open on one node)"),
            "≤ 8 KiB",
            noProcess
                ? "not measured: no node process to read"
                : string.Create(CultureInfo.InvariantCulture, $"{kib:0.0} KiB (server RSS {sessions.RssBeforeBytes / 1048576.0:0} → {sessions.RssOpenBytes / 1048576.0:0} MiB; all open with their lease in {sessions.SecondsToOpen:0.0} s)"),
            smoke || noProcess ? null : kib <= 8,
            "resident set of the node process after every session had its `lease` event, which includes garbage the GC has not collected yet"));
        var woken = sessions.WokenMs;
        targets.Add(new TargetCheck(
            string.Create(CultureInfo.InvariantCulture, $"Sessions: a reset session → all {sessions.Subscribers} subscribers woken ({sessions.Kills} resets)"),
            "p99 ≤ 1 s, none missed",
            string.Create(CultureInfo.InvariantCulture, $"p99 {woken.P99} ms (p50 {woken.P50}, max {woken.Max}), missed {sessions.Missed}"),
            smoke ? null : woken.P99 <= 1000 && sessions.Missed == 0,
            string.Create(CultureInfo.InvariantCulture, $"from the socket's reset (linger 0) to the last parked poll's changed answer, with {sessions.Sessions:N0} sessions open")));
    }
}

public sealed record SessionResult(
    int Asked, int Sessions, int SourceAddresses, double SecondsToOpen, long RssBeforeBytes, long RssOpenBytes, double BytesPerSession,
    int Kills, int Subscribers, int Missed, Distribution WokenMs);
