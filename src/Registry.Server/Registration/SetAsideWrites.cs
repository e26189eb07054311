using Registry.Model;

namespace Registry.Registration;

/// <summary>
/// Writes the batch loop took from the queue and set aside for later batches, because their instance was already in
/// the batch being made (a batch writes an instance once). Each instance's writes wait in their arrival order; the
/// instances take turns, one write each a batch, so making a batch costs a step per instance waiting, not per write.
/// Only the batch loop touches it.
/// </summary>
internal sealed class SetAsideWrites
{
    private readonly Dictionary<InstanceKey, Queue<WriteCommand>> _byInstance = [];
    private readonly Queue<InstanceKey> _turns = new();

    /// <summary>The writes set aside.</summary>
    public int Count { get; private set; }

    /// <summary>Whether a write to <paramref name="key"/> waits here (so a later one must wait behind it).</summary>
    public bool Holds(InstanceKey key) => Count > 0 && _byInstance.ContainsKey(key);

    public void Add(WriteCommand command)
    {
        if (!_byInstance.TryGetValue(command.Key, out var writes))
        {
            writes = new Queue<WriteCommand>();
            _byInstance.Add(command.Key, writes);
            _turns.Enqueue(command.Key);
        }

        writes.Enqueue(command);
        Count++;
    }

    /// <summary>Moves the first write of each instance, in turn, into <paramref name="batch"/> (noting its instance in <paramref name="keys"/>) until it holds <paramref name="most"/>.</summary>
    public void TakeInto(List<WriteCommand> batch, HashSet<InstanceKey> keys, int most)
    {
        for (var turns = _turns.Count; turns > 0 && batch.Count < most; turns--)
        {
            var key = _turns.Dequeue();
            var writes = _byInstance[key];
            batch.Add(writes.Dequeue());
            keys.Add(key);
            Count--;
            if (writes.Count > 0)
            {
                _turns.Enqueue(key);
            }
            else
            {
                _byInstance.Remove(key);
            }
        }
    }

    /// <summary>Takes every write out (to fail them).</summary>
    public List<WriteCommand> TakeAll()
    {
        var all = _byInstance.Values.SelectMany(writes => writes).ToList();
        _byInstance.Clear();
        _turns.Clear();
        Count = 0;
        return all;
    }
}
