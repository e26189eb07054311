namespace Registry.Client.UnitTests.Infrastructure;

/// <summary>The unobserved task exceptions whose message holds a marker, recorded while this lives.</summary>
public sealed class UnobservedExceptions : IDisposable
{
    private readonly string _marker;
    private readonly List<Exception> _seen = [];

    public UnobservedExceptions(string marker)
    {
        _marker = marker;
        TaskScheduler.UnobservedTaskException += Record;
    }

    public IReadOnlyList<Exception> Seen
    {
        get
        {
            lock (_seen)
            {
                return [.. _seen];
            }
        }
    }

    public void Dispose() => TaskScheduler.UnobservedTaskException -= Record;

    private void Record(object? sender, UnobservedTaskExceptionEventArgs e)
    {
        if (e.Exception.InnerExceptions.Any(x => x.Message.Contains(_marker, StringComparison.Ordinal)))
        {
            lock (_seen)
            {
                _seen.Add(e.Exception);
            }
        }
    }
}
