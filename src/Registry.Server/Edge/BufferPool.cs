using System.Buffers;
using System.Collections.Concurrent;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Options;

namespace Registry.Edge;

/// <summary>
/// Kestrel's connection buffers, kept between bursts. The framework's pool (since .NET 10)
/// gives idle blocks back to the GC after about ten seconds, which suits a server whose load is
/// steady; a registry's is the opposite: long quiet stretches of parked polls, then one change
/// that answers thousands of them at once. Each block let go is then allocated again on the
/// pinned heap in the middle of that burst, one lock and one more step towards a full
/// collection each, while the consumers wait. This pool keeps what was returned, up to
/// <see cref="NetworkOptions.RetainedBufferMegabytes"/>, and never more than the busiest moment
/// needed.
/// </summary>
internal sealed class RetainingBufferPoolFactory(IOptions<NetworkOptions> network) : IMemoryPoolFactory<byte>
{
    // Kestrel may make several pools (per transport, per I/O queue): the cap is the node's, shared by them all.
    private readonly Budget _budget = new(network.Value.RetainedBufferMegabytes * (1024 * 1024 / RetainingBufferPool.BlockSize));

    public MemoryPool<byte> Create(MemoryPoolOptions? options = null) => new RetainingBufferPool(_budget);

    /// <summary>How many blocks the node's pools may keep between them.</summary>
    internal sealed class Budget(int blocks)
    {
        private int _kept;

        public bool TryKeep()
        {
            if (Interlocked.Increment(ref _kept) <= blocks)
            {
                return true;
            }

            Interlocked.Decrement(ref _kept);
            return false;
        }

        public void Released() => Interlocked.Decrement(ref _kept);
    }
}

/// <summary>Blocks of <see cref="BlockSize"/> bytes on the pinned heap (sockets read and write them in place), kept within the node's budget.</summary>
internal sealed class RetainingBufferPool(RetainingBufferPoolFactory.Budget budget) : MemoryPool<byte>
{
    /// <summary>Kestrel's block size: one page.</summary>
    public const int BlockSize = 4096;

    private readonly ConcurrentQueue<Block> _blocks = new();
    private volatile bool _disposed;

    public override int MaxBufferSize => BlockSize;

    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        if (minBufferSize > BlockSize)
        {
            // Kestrel never asks for more than a block; anyone else gets an array of their own.
            return new Unpooled(minBufferSize);
        }

        if (_blocks.TryDequeue(out var block))
        {
            budget.Released();
            return block;
        }

        return new Block(this);
    }

    protected override void Dispose(bool disposing)
    {
        _disposed = true;
        while (_blocks.TryDequeue(out _))
        {
            budget.Released();
        }
    }

    private void Return(Block block)
    {
        if (!_disposed && budget.TryKeep())
        {
            _blocks.Enqueue(block);
        }

        // Otherwise left to the GC.
    }

    private sealed class Block(RetainingBufferPool pool) : IMemoryOwner<byte>
    {
        public Memory<byte> Memory { get; } = GC.AllocateUninitializedArray<byte>(BlockSize, pinned: true);

        public void Dispose() => pool.Return(this);
    }

    private sealed class Unpooled(int size) : IMemoryOwner<byte>
    {
        public Memory<byte> Memory { get; } = new byte[size];

        public void Dispose()
        {
        }
    }
}
