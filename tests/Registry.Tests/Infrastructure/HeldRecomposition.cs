using Registry.Subscription;

namespace Registry.Tests.Infrastructure;

/// <summary>Holds the loader's thread where a change to the application is about to be recomposed, while told to.</summary>
internal sealed class HeldRecomposition(string application) : IChangeWitness
{
    private readonly SemaphoreSlim _released = new(0);
    private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _holding;

    public Task Entered => _entered.Task;

    public void Hold() => _holding = true;

    public void Release() => _released.Release();

    public IChangeRecord? Begin(IReadOnlyCollection<string> applications)
    {
        if (_holding && applications.Contains(application))
        {
            _holding = false;
            _entered.TrySetResult();
            // Synchronous, as the loader's call is; bounded so a broken test cannot hang the suite.
            _released.Wait(TimeSpan.FromSeconds(30));
        }

        return null;
    }
}
