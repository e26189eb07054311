namespace Registry.Client.UnitTests.Infrastructure;

/// <summary>Base of the scripted tests: a fake clock, a scripted registry, captured logs, a client over them.</summary>
public abstract class ScriptedTest : IDisposable
{
    private readonly List<IDisposable> _owned = [];

    protected ScriptedTest()
    {
        Handler = new ScriptedHandler(Clock);
    }

    protected TestClock Clock { get; } = new();

    protected ScriptedHandler Handler { get; }

    protected CapturedLogs Logs { get; } = new();

    protected static ProviderInstance Instance(string application = "provider_test") => new(application, "http", "10.0.0.1:80");

    protected RegistryClient NewClient(Action<RegistryClientOptions>? configure = null, params Uri[] servers)
    {
        var options = Scripted.Options(servers);
        configure?.Invoke(options);
        var http = new HttpClient(Handler, disposeHandler: false) { Timeout = Timeout.InfiniteTimeSpan };
        var loggers = Logs.Factory();
        _owned.Add(http);
        _owned.Add(loggers);
        return new RegistryClient(http, options, loggers, Clock);
    }

    public void Dispose()
    {
        foreach (var owned in _owned)
        {
            owned.Dispose();
        }

        Handler.Dispose();
        GC.SuppressFinalize(this);
    }
}
