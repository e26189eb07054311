namespace Registry.Storage;

/// <summary>
/// The database's clock as seen from this node. Lease times are database time; the node
/// learns the offset from every statement that reports <c>clock_timestamp()</c>, so a
/// heartbeat answered from memory states an expiry in the database's terms.
/// </summary>
internal sealed class DatabaseClock(TimeProvider time)
{
    private long _offsetTicks;

    public DateTimeOffset UtcNow => time.GetUtcNow().AddTicks(Interlocked.Read(ref _offsetTicks));

    /// <summary>Records a database timestamp read just now.</summary>
    public void Observe(DateTimeOffset databaseNow) =>
        Interlocked.Exchange(ref _offsetTicks, (databaseNow - time.GetUtcNow()).Ticks);
}
