namespace Registry.FaultTests;

/// <summary>
/// The seeded random clients: providers that register, heartbeat through random nodes,
/// re-register and unregister; deploys that register (and sometimes unregister) hundreds of
/// one application's instances at once through every node, so that batches overflow the
/// notification payload and announce the whole application; consumers holding sessions of
/// parked polls with random subscriptions on random nodes; and a probe that measures how long
/// each node takes to serve an acknowledged write.
/// </summary>
public sealed class Workload(RegistryApi api, History history, int seed)
{
    public const int Providers = 24;
    public const int Consumers = 8;
    public const int DeploySize = 240;

    /// <summary>Every application the run may touch (consumers subscribe among them; the checker compares them all).</summary>
    public static readonly string[] Applications =
        ["svc0", "svc1", "svc2", "svc3", "svc4", "deploy0", "deploy1", "ooo0", "ooo1", "ooo2", "ooo3", "probe"];

    private readonly List<Consumer> _consumers = [];
    private volatile bool _quiescent;

    public IReadOnlyList<Consumer> ConsumerStates => _consumers;

    /// <summary>From now on no client writes (providers only heartbeat) and consumers stay parked where they are.</summary>
    public void Quiesce() => _quiescent = true;

    /// <summary>Runs every client until <paramref name="stop"/>; <paramref name="runFor"/> bounds the deploys' schedule.</summary>
    public Task RunAsync(TimeSpan runFor, CancellationToken stop)
    {
        var random = new Random(seed);
        var tasks = new List<Task>();
        for (var p = 0; p < Providers; p++)
        {
            tasks.Add(ProviderAsync(p, new Random(random.Next()), stop));
        }

        for (var c = 0; c < Consumers; c++)
        {
            var consumer = new Consumer($"consumer{c}");
            _consumers.Add(consumer);
            tasks.Add(ConsumeAsync(consumer, new Random(random.Next()), stop));
        }

        tasks.Add(DeploysAsync(runFor, new Random(random.Next()), stop));
        for (var n = 0; n < api.NodeCount; n++)
        {
            tasks.Add(ProbeAsync(n, stop));
        }

        return Task.WhenAll(tasks.Select(Quietly));
    }

    private static async Task Quietly(Task task)
    {
        try
        {
            await task;
        }
        catch (OperationCanceledException)
        {
            // The run is over.
        }
    }

    private async Task ProviderAsync(int p, Random random, CancellationToken stop)
    {
        var client = $"provider{p}";
        var application = $"svc{p % 5}";
        var addr = $"10.0.{p % 5}.{p}:8080";
        var zone = random.Next(2) == 0 ? "a" : "b";
        var ttl = random.Next(4, 7);
        // Half the providers keep to one node until it fails them, as a client library does; the rest spread every call.
        int? home = p % 2 == 0 ? random.Next(api.NodeCount) : null;
        var registered = false;
        await Task.Delay(random.Next(0, 1000), stop);
        while (!stop.IsCancellationRequested)
        {
            if (!registered)
            {
                if (_quiescent)
                {
                    // A provider that lost its registration during the run stays gone: no writes now.
                    return;
                }

                var op = await api.RegisterAsync(client, home ?? random.Next(api.NodeCount), application, addr, zone, ttl, stop);
                registered = op.Outcome == Outcome.Acknowledged;
                if (op.Outcome == Outcome.Unknown && home is not null)
                {
                    home = (home + 1) % api.NodeCount;
                }
                if (!registered)
                {
                    await Task.Delay(200, stop);
                    continue;
                }
            }

            await Task.Delay(TimeSpan.FromSeconds(ttl / 3.0 * (0.7 + 0.3 * random.NextDouble())), stop);
            var roll = random.NextDouble();
            if (!_quiescent && roll < 0.04)
            {
                // A redeploy: new meta, maybe a new TTL, through any node.
                zone = random.Next(2) == 0 ? "a" : "b";
                ttl = random.Next(4, 7);
                registered = false;
            }
            else if (!_quiescent && roll < 0.06 && home is { } at)
            {
                // A long lease through the home node, then a short one through another node, then
                // heartbeats through the home node again: the home node must renew what the
                // database holds, not what it last wrote itself.
                await api.RegisterAsync(client, at, application, addr, zone, 60, stop);
                await api.RegisterAsync(client, (at + 1 + random.Next(api.NodeCount - 1)) % api.NodeCount, application, addr, zone, ttl, stop);
            }
            else if (!_quiescent && roll < 0.09)
            {
                var op = await api.UnregisterAsync(client, random.Next(api.NodeCount), application, addr, stop);
                registered = false;
                if (op.Outcome != Outcome.Unknown)
                {
                    await Task.Delay(random.Next(300, 1500), stop);
                }
            }
            else
            {
                (registered, home) = await HeartbeatAsync(client, application, addr, home, random, stop);
            }
        }
    }

    /// <summary>
    /// Heartbeats through the home node (or a random one), failing over on 503 or no answer as a
    /// client library does; the node that answered becomes the home. False: 404, register again.
    /// </summary>
    private async Task<(bool Registered, int? Home)> HeartbeatAsync(string client, string application, string addr, int? home, Random random, CancellationToken stop)
    {
        var first = home ?? random.Next(api.NodeCount);
        for (var i = 0; i < api.NodeCount; i++)
        {
            var node = (first + i) % api.NodeCount;
            var op = await api.HeartbeatAsync(client, node, application, addr, stop);
            switch (op.Outcome)
            {
                case Outcome.Acknowledged:
                    return (true, home is null ? null : node);
                case Outcome.Refused:
                    return (false, home); // 404: the provider must register again
            }
        }

        return (true, home); // no node could answer: keep the registration, try again next period
    }

    private async Task DeploysAsync(TimeSpan runFor, Random random, CancellationToken stop)
    {
        for (var d = 0; d < 2; d++)
        {
            await Task.Delay(runFor * (d == 0 ? 0.15 : 0.45) + TimeSpan.FromSeconds(random.Next(0, 5)), stop);
            if (_quiescent)
            {
                return;
            }

            await DeployAsync($"deploy{d}", random, unregisterAfter: d == 0 || random.Next(2) == 0, stop);
        }
    }

    /// <summary>
    /// Hundreds of one application's instances at once through every node. The long host names
    /// make a batch's changed-instance list overflow the notification payload, so nodes get
    /// whole-application notifications. Left to expire, they are a mass death that
    /// self-preservation must pace.
    /// </summary>
    private async Task DeployAsync(string application, Random random, bool unregisterAfter, CancellationToken stop)
    {
        var label = new string((char)('a' + random.Next(26)), 60);
        var addrs = Enumerable.Range(0, DeploySize).Select(i => $"{application}-{i:D4}.{label}.{label}.example:8080").ToArray();
        var ttl = random.Next(4, 7);
        var ops = await Task.WhenAll(addrs.Select((addr, i) => api.RegisterAsync(application, i % api.NodeCount, application, addr, "a", ttl, stop)));
        if (unregisterAfter)
        {
            await Task.Delay(random.Next(500, 2000), stop);
            await Task.WhenAll(ops.Where(o => o.Outcome == Outcome.Acknowledged)
                .Select((o, i) => api.UnregisterAsync(application, i % api.NodeCount, application, o.Addr, stop)));
        }
    }

    private async Task ConsumeAsync(Consumer consumer, Random random, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            var node = random.Next(api.NodeCount);
            var interests = Enumerable.Range(0, random.Next(1, 4))
                .Select(_ => new Interest(
                    Applications[random.Next(Applications.Length)],
                    random.Next(4) == 0 ? "http" : null,
                    random.Next(3) == 0 ? (random.Next(2) == 0 ? "a" : "b") : null))
                .ToArray();
            var sessionEnds = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(random.Next(5, 16));
            consumer.Begin(node, interests);
            string? version = null;
            while (!stop.IsCancellationRequested && (_quiescent || DateTimeOffset.UtcNow < sessionEnds))
            {
                var (_, answer) = await api.SubscribeAsync(consumer.Name, node, interests, version, random.Next(25, 45), stop);
                if (answer is null)
                {
                    await Task.Delay(250, stop);
                    continue;
                }

                consumer.Answered(answer);
                version = answer.Version;
            }
        }
    }

    /// <summary>Each node's probe instance is re-registered every ~1.2 s; the lag until every node serves it is "reads stale".</summary>
    private async Task ProbeAsync(int node, CancellationToken stop)
    {
        var addr = $"10.250.0.{node}:80";
        var refused = false;
        while (!stop.IsCancellationRequested && !_quiescent)
        {
            // After a refusal, try again soon: the span of refusals through this node is "writes refused".
            await Task.Delay(refused ? 200 : 1200, stop);
            var op = await api.RegisterAsync($"probe{node}", node, "probe", addr, "a", 60, stop);
            refused = op.Outcome != Outcome.Acknowledged;
            if (refused)
            {
                continue;
            }

            var seen = new TimeSpan?[api.NodeCount];
            var stale = new bool[api.NodeCount];
            var limit = op.Completed + TimeSpan.FromSeconds(10);
            while (seen.Any(s => s is null) && DateTimeOffset.UtcNow < limit)
            {
                await Task.WhenAll(Enumerable.Range(0, api.NodeCount).Where(n => seen[n] is null).Select(async n =>
                {
                    if (await api.ServedAsync(n, "probe", stop) is { } served)
                    {
                        if (served.Endpoints.Any(e => e.Addr == addr && e.Meta.Contains($"w={op.Write}", StringComparison.Ordinal)))
                        {
                            seen[n] = DateTimeOffset.UtcNow - op.Completed;
                        }
                        else
                        {
                            stale[n] = true;
                        }
                    }
                }));

                await Task.Delay(50, stop);
            }

            // A node that answered without the write served it stale; one that was down (killed,
            // starting) and had it at its first answer, seconds later, served nothing stale.
            for (var n = 0; n < api.NodeCount; n++)
            {
                if (stale[n] || seen[n] < TimeSpan.FromSeconds(1))
                {
                    history.Staleness.Enqueue((op.Completed, n, seen[n]));
                }
            }
        }
    }
}

/// <summary>A consumer's current session and the last answer it was given.</summary>
public sealed class Consumer(string name)
{
    private readonly Lock _gate = new();

    public string Name { get; } = name;

    public int Node { get; private set; }

    public IReadOnlyList<Interest> Interests { get; private set; } = [];

    public ConsumerAnswer? Last { get; private set; }

    public void Begin(int node, IReadOnlyList<Interest> interests)
    {
        lock (_gate)
        {
            Node = node;
            Interests = interests;
            Last = null;
        }
    }

    public void Answered(ConsumerAnswer answer)
    {
        lock (_gate)
        {
            Last = answer;
        }
    }

    public (int Node, IReadOnlyList<Interest> Interests, ConsumerAnswer? Last) Snapshot()
    {
        lock (_gate)
        {
            return (Node, Interests, Last);
        }
    }
}
