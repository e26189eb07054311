using Registry.ChangeFeed;
using Registry.Membership;
using Registry.Model;
using Registry.State;
using Registry.Storage;

namespace Registry.Tests;

/// <summary>
/// The bookkeeping that lets a node apply its own batches from the rows they returned: a
/// notification is the batch's only when it carries the batch's tag.
/// </summary>
public sealed class OwnCommitsTests
{
    private readonly OwnCommits _own = new(new NodeIdentity());

    [Fact]
    public void ANotificationWithoutTheBatchsTagIsNeverCountedAgainstIt()
    {
        var batch = _own.Expect();
        batch.Settle(OneChange("app"));

        // A sweep's notification (untagged), and another node's batch (another node's tag).
        Assert.Null(_own.Receive(null));
        Assert.Null(_own.Receive(new OwnCommits(new NodeIdentity()).Expect().Tag));
        _own.CompleteLoaded();

        Assert.False(batch.Applied.Task.IsCompleted);
        Assert.Same(batch, _own.Receive(batch.Tag));
        _own.CompleteLoaded();
        Assert.True(batch.Applied.Task.IsCompletedSuccessfully);
        Assert.Equal(0, _own.Count);
    }

    [Fact]
    public void ANotificationBeforeTheBatchSettledIsCountedAndReadAfresh()
    {
        var batch = _own.Expect();

        Assert.Same(batch, _own.Receive(batch.Tag));
        Assert.Null(batch.For("app")); // its rows are not known yet: the loader reads them
        _own.CompleteLoaded();
        Assert.False(batch.Applied.Task.IsCompleted);

        batch.Settle(OneChange("app"));
        _own.CompleteLoaded();
        Assert.True(batch.Applied.Task.IsCompletedSuccessfully);
    }

    [Fact]
    public void ABatchThatFailedButCommittedIsForgottenAndItsNotificationsReadLikeAnyOther()
    {
        var batch = _own.Expect();
        batch.Settle(null);
        _own.CompleteLoaded();

        Assert.True(batch.Applied.Task.IsCompletedSuccessfully);
        Assert.Equal(0, _own.Count);
        Assert.Null(_own.Receive(batch.Tag));
    }

    [Fact]
    public void AnAbandonedBatchIsForgottenAndAFullLoadCompletesEverySettledOne()
    {
        var abandoned = _own.Expect();
        var settled = _own.Expect();
        var running = _own.Expect();
        settled.Settle(OneChange("app"));

        _own.Abandon(abandoned);
        _own.CompleteSettled();

        Assert.True(abandoned.Applied.Task.IsCompletedSuccessfully);
        Assert.True(settled.Applied.Task.IsCompletedSuccessfully);
        Assert.False(running.Applied.Task.IsCompleted);
        Assert.Equal(1, _own.Count);
        Assert.NotEqual(abandoned.Tag, settled.Tag);
    }

    [Fact]
    public void TagsParseBackFromTheNotificationPayload()
    {
        var tag = _own.Expect().Tag;

        Assert.Equal(("app", tag), Announcement.Parse($"app {tag}\nhttp 10.0.0.1:80") is var (a, t, k) ? (a, t) : default);
        Assert.Equal([new InstanceKey("app", "http", "10.0.0.1:80")], Announcement.Parse($"app {tag}\nhttp 10.0.0.1:80").Keys!);
        Assert.Equal(("app", (string?)null, (InstanceKey[]?)null), Announcement.Parse("app"));
    }

    private static Dictionary<string, Changes> OneChange(string application)
    {
        var changes = new Changes();
        changes.Add(new InstanceKey(application, "http", "10.0.0.1:80"), null);
        return new Dictionary<string, Changes> { [application] = changes };
    }
}
