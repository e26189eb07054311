using System.ComponentModel.DataAnnotations;

namespace Registry.Registration;

/// <summary>The group-committed write path (section <c>Registry:Writes</c>).</summary>
public sealed class WriteOptions
{
    /// <summary>Most registrations and unregistrations committed in one transaction.</summary>
    [Range(1, 10_000)]
    public int MaxBatchSize { get; set; } = 500;

    /// <summary>
    /// Most writes waiting for a batch; beyond it writes answer 503 with Retry-After. Writes to an instance already in
    /// the batch being made wait apart for a later one, up to as many again.
    /// </summary>
    [Range(1, 1_000_000)]
    public int MaxQueueLength { get; set; } = 20_000;

    /// <summary>The Retry-After sent with a 503 when the database cannot take a write, in seconds.</summary>
    [Range(1, 3600)]
    public int RetryAfterSeconds { get; set; } = 2;
}
