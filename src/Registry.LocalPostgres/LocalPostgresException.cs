namespace Registry.Postgres;

/// <summary>PostgreSQL cannot be provided: the message says what to install or configure.</summary>
public sealed class LocalPostgresException(string message, Exception? inner = null) : Exception(message, inner);
