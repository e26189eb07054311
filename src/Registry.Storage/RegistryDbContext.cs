using Microsoft.EntityFrameworkCore;

namespace Registry.Storage;

/// <summary>
/// Owns the schema. Hot statements (group-committed writes, renewals, the sweep, loads)
/// are plain SQL through the same data source; see <see cref="Schema"/> for the names.
/// </summary>
public sealed class RegistryDbContext(DbContextOptions<RegistryDbContext> options) : DbContext(options)
{
    /// <summary>The registered instances.</summary>
    public DbSet<InstanceRow> Instances => Set<InstanceRow>();

    /// <summary>The registry tokens (hashes only).</summary>
    public DbSet<TokenRow> Tokens => Set<TokenRow>();

    /// <summary>The registry nodes and when each last reached the database.</summary>
    public DbSet<NodeRow> Nodes => Set<NodeRow>();

    /// <summary>Recent sweeps' evictions (self-preservation's cluster-wide budget).</summary>
    public DbSet<EvictionRow> Evictions => Set<EvictionRow>();

    /// <inheritdoc />
    protected override void OnModelCreating(ModelBuilder modelBuilder)
    {
        ArgumentNullException.ThrowIfNull(modelBuilder);
        modelBuilder.HasSequence<long>(Schema.RevisionSequence);

        modelBuilder.Entity<InstanceRow>(instance =>
        {
            instance.ToTable(Schema.InstancesTable);
            // Room on each page so that lease renewals are HOT updates (no index churn).
            instance.HasStorageParameter("fillfactor", 70);
            instance.HasKey(i => new { i.Application, i.Protocol, i.Addr });
            // "C" collation: keys compare byte-wise, as the API promises, whatever the
            // database's default collation is.
            instance.Property(i => i.Application).HasColumnName("application").UseCollation("C");
            instance.Property(i => i.Protocol).HasColumnName("protocol").UseCollation("C");
            instance.Property(i => i.Addr).HasColumnName("addr").UseCollation("C");
            instance.Property(i => i.Meta).HasColumnName("meta").HasColumnType("jsonb");
            instance.Property(i => i.TtlSeconds).HasColumnName("ttl_seconds");
            // expires_at is deliberately in no index: renewals then stay HOT updates.
            instance.Property(i => i.ExpiresAt).HasColumnName("expires_at").HasColumnType("timestamptz");
            instance.Property(i => i.RegisteredAt).HasColumnName("registered_at").HasColumnType("timestamptz");
            instance.Property(i => i.Revision).HasColumnName("revision")
                .HasDefaultValueSql($"nextval('{Schema.RevisionSequence}')");
            instance.Property(i => i.SessionHeld).HasColumnName("session_held").HasDefaultValue(false);
            instance.Property(i => i.ProbeKind).HasColumnName("probe_kind");
            instance.Property(i => i.ProbePath).HasColumnName("probe_path");
            instance.Property(i => i.ProbeIntervalSeconds).HasColumnName("probe_interval_seconds");
            instance.Property(i => i.ProbeCredential).HasColumnName("probe_credential").UseCollation("C");
            // The probe schedulers read only the probed rows.
            instance.HasIndex(i => i.ProbeKind).HasFilter("probe_kind IS NOT NULL");
        });

        modelBuilder.Entity<TokenRow>(token =>
        {
            token.ToTable(Schema.TokensTable);
            token.HasKey(t => t.Id);
            token.Property(t => t.Id).HasColumnName("id").UseCollation("C");
            token.Property(t => t.Hash).HasColumnName("hash");
            // Looked up by hash only when a node loads its cache, but two tokens must never share one.
            token.HasIndex(t => t.Hash).IsUnique();
            token.Property(t => t.Description).HasColumnName("description");
            token.Property(t => t.Register).HasColumnName("register");
            token.Property(t => t.Subscribe).HasColumnName("subscribe");
            token.Property(t => t.Admin).HasColumnName("admin");
            token.Property(t => t.CreatedAt).HasColumnName("created_at").HasColumnType("timestamptz");
            token.Property(t => t.ExpiresAt).HasColumnName("expires_at").HasColumnType("timestamptz");
            token.Property(t => t.LastUsedAt).HasColumnName("last_used_at").HasColumnType("timestamptz");
        });

        modelBuilder.Entity<NodeRow>(node =>
        {
            node.ToTable(Schema.NodesTable);
            node.HasKey(n => n.Id);
            node.Property(n => n.Id).HasColumnName("id").UseCollation("C");
            node.Property(n => n.StartedAt).HasColumnName("started_at").HasColumnType("timestamptz");
            node.Property(n => n.LastSeenAt).HasColumnName("last_seen_at").HasColumnType("timestamptz");
            node.Property(n => n.VouchedAt).HasColumnName("vouched_at").HasColumnType("timestamptz");
            node.Property(n => n.Url).HasColumnName("url");
            node.Property(n => n.ProbeNetworks).HasColumnName("probe_networks");
            node.Property(n => n.ProbesPassing).HasColumnName("probes_passing");
            node.Property(n => n.ProbesWithdrawn).HasColumnName("probes_withdrawn");
            node.Property(n => n.LeftAt).HasColumnName("left_at").HasColumnType("timestamptz");
        });

        modelBuilder.Entity<EvictionRow>(eviction =>
        {
            eviction.ToTable(Schema.EvictionsTable);
            eviction.HasKey(e => e.Id);
            eviction.Property(e => e.Id).HasColumnName("id").UseIdentityAlwaysColumn();
            eviction.Property(e => e.EvictedAt).HasColumnName("evicted_at").HasColumnType("timestamptz");
            eviction.Property(e => e.Instances).HasColumnName("instances");
        });
    }
}

/// <summary>Names that the hand-written SQL shares with the model.</summary>
public static class Schema
{
    /// <summary>The table of registered instances.</summary>
    public const string InstancesTable = "instances";

    /// <summary>The registry nodes (see <see cref="NodeRow"/>).</summary>
    public const string NodesTable = "nodes";

    /// <summary>Recent evictions (see <see cref="EvictionRow"/>).</summary>
    public const string EvictionsTable = "evictions";

    /// <summary>The sequence that stamps content changes.</summary>
    public const string RevisionSequence = "instance_revision";

    /// <summary>The channel every committed change is announced on.</summary>
    public const string ChangeChannel = "registry_changes";

    /// <summary>The table of registry tokens.</summary>
    public const string TokensTable = "tokens";

    /// <summary>The channel token creations and revocations are announced on.</summary>
    public const string TokenChannel = "registry_tokens";
}
