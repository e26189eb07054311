using Registry.Model;

namespace Registry.State;

/// <summary>One registered instance as a node holds it in memory.</summary>
internal sealed record Instance(InstanceKey Key, Meta Meta, int TtlSeconds, DateTimeOffset ExpiresAt, long Revision);
