using Registry.ChangeFeed;
using Registry.Membership;
using Registry.Model;
using Registry.Storage;
using Registry.Subscription;

namespace Registry.Drain;

/// <summary>
/// A drain channel on the change feed's connection: the shared one (questions to every node, and the answers of nodes
/// that answer there), or this node's own (the answers to its questions, <see cref="DrainMessages.ReplyChannelOf"/>).
/// A question lost while the connection was down is not asked again (its asker times out), so there is nothing to reload.
/// </summary>
internal sealed class DrainChannel(
    string channel,
    DrainTracker tracker,
    DrainCoordinator coordinator,
    DrainMessenger messenger,
    RegistryLoader loader,
    SubscriptionHub hub,
    NodeIdentity node) : IChangeFeedChannel
{
    public string Channel => channel;

    public Task ReloadAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Notified(string payload)
    {
        if (DrainMessages.Words(payload) is not { } words)
        {
            return;
        }

        switch (words[0])
        {
            case "ask":
                // Here, not later: the removal's own notification is handed to the loader next.
                tracker.Asked(words[1], DrainMessages.Number(words[2]), new InstanceKey(words[3], words[4], words[5]), loader);
                break;
            case "report":
                coordinator.Reported(words[1], words[2], DrainMessages.Number(words[3]), DrainMessages.Number(words[4]));
                break;
            case "watch":
                // Counting takes the hub's lock: off the connection's reading path.
                var (id, application) = (words[1], words[2]);
                ThreadPool.QueueUserWorkItem(_ =>
                {
                    var replies = DrainMessages.ReplyChannel(id);
                    foreach (var part in DrainMessages.Watchers(id, node.Id, hub.Watchers(application)))
                    {
                        messenger.Post(replies, part);
                    }
                });
                break;
            case "watchers":
                // An answer on the shared channel (from a node that answers there) reaches every node: only the asker parses it.
                coordinator.Watched(words[1], words[2], words[3] == "1", words.Length == 5 ? words[4] : "");
                break;
        }
    }
}
