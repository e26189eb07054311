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

    /// <summary>
    /// A watch's first check reads the state outside any lock; the loader may replace the state (the instance
    /// unregistered elsewhere) and check the watch before that first check is applied. The removal, seen first, is
    /// not taken for one while the watch has not yet seen its registration in memory; the late first check then shows
    /// it did, so the removal is. Before, the late check only marked the registration seen, and the session never
    /// heard it was unregistered (its stream ended later as if released).
    /// </summary>
    [Fact]
    public async Task ARemovalCheckedBeforeALateFirstCheckThatShowsTheRegistrationSettlesTheWatch()
    {
        var key = Key("app");
        var registered = new Instance(key, Meta.Empty, 10, DateTimeOffset.UtcNow.AddSeconds(10), Revision: 5);
        var state = new RegistryState();
        state.Replace([new ApplicationSnapshot("app", [registered])]);
        var shownAtFirst = state.Sequence;
        using var watch = state.Watches.Watch(key, 5, caughtUp: false, new RegistryState()); // its first look found nothing yet

        state.Replace([new ApplicationSnapshot("app", [])]); // the loader: removed, checked at once
        Assert.False(watch.Fate.IsCompleted);
        watch.Check(shownAtFirst, registered); // the first check, read before the removal, applied after it

        Assert.True(watch.Fate.IsCompletedSuccessfully);
        Assert.Equal(InstanceFate.Removed, await watch.Fate);
    }

    /// <summary>A check of an older state never undoes what a newer one showed (here: the registration, still there).</summary>
    [Fact]
    public void ALateCheckOfAnOlderStateDoesNotSettleAWatchTheNewerStateKeeps()
    {
        var key = Key("app");
        var registered = new Instance(key, Meta.Empty, 10, DateTimeOffset.UtcNow.AddSeconds(10), Revision: 5);
        var state = new RegistryState();
        using var watch = state.Watches.Watch(key, 5, caughtUp: false, state);

        state.Replace([new ApplicationSnapshot("app", [registered])]);
        watch.Check(0, null); // what the empty state showed, applied late

        Assert.False(watch.Fate.IsCompleted);
    }

    /// <summary>A late first check that shows a later registration in the registration's place settles the watch as replaced, whatever the newer state shows.</summary>
    [Fact]
    public async Task ALateFirstCheckShowingALaterRegistrationSettlesTheWatchAsReplaced()
    {
        var key = Key("app");
        var later = new Instance(key, Meta.Empty, 10, DateTimeOffset.UtcNow.AddSeconds(10), Revision: 7);
        var state = new RegistryState();
        state.Replace([new ApplicationSnapshot("app", [later])]);
        var shownAtFirst = state.Sequence;
        using var watch = state.Watches.Watch(key, 5, caughtUp: false, new RegistryState());

        state.Replace([new ApplicationSnapshot("app", [])]);
        watch.Check(shownAtFirst, later);

        Assert.Equal(InstanceFate.Replaced, await watch.Fate.WaitAsync(TimeSpan.FromSeconds(1)));
    }

    private static InstanceKey Key(string application) => new(application, "http", "10.0.0.1:80");
}
