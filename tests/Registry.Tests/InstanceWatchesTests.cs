using Registry.Model;
using Registry.State;

namespace Registry.Tests;

/// <summary>
/// The watches of held registrations (sessions), by application: an application's set goes
/// once its last watch does, so names that come and go (a session per job) leave nothing behind.
/// </summary>
public sealed class InstanceWatchesTests
{
    [Fact]
    public void AnApplicationsSetGoesWithItsLastWatch()
    {
        var state = new RegistryState();
        var watches = Enumerable.Range(0, 1000).Select(i => state.Watches.Watch(Key($"job-{i}"), 1, caughtUp: false, state)).ToList();
        Assert.Equal(1000, state.Watches.Applications);

        watches.ForEach(w => w.Dispose());

        Assert.Equal(0, state.Watches.Applications);
    }

    private static InstanceKey Key(string application) => new(application, "http", "10.0.0.1:80");
}
