using Npgsql;
using NpgsqlTypes;
using Registry.Storage;

namespace Registry.Access;

/// <summary>What a token may do and until when, as asked for at creation.</summary>
internal sealed record TokenSpec(string Description, string[] Register, string[] Subscribe, bool Admin, DateTimeOffset? Expires)
{
    /// <summary>What is wrong with a description (the API's and the command's rule), or null.</summary>
    public static string? DescriptionProblem(string description, AccessOptions limits) =>
        description.Length == 0 || description.EnumerateRunes().Count() > limits.MaxTokenDescriptionLength || description.Any(char.IsControl)
            ? $"must be 1 to {limits.MaxTokenDescriptionLength} characters without control characters"
            : null;

    /// <summary>What is wrong with a list of patterns (the API's and the command's rule), or null.</summary>
    public static string? PatternsProblem(IReadOnlyCollection<string> patterns, AccessOptions limits) =>
        patterns.Count > limits.MaxTokenPatterns || !patterns.All(Grant.IsPattern)
            ? $"must be at most {limits.MaxTokenPatterns} patterns, each an application name, a name prefix ending in '*', or '*'"
            : null;
}

/// <summary>A stored token: everything but the secret (the hash stays in the store and the cache).</summary>
internal sealed record StoredToken(string Id, string Description, string[] Register, string[] Subscribe, bool Admin,
    DateTimeOffset Created, DateTimeOffset? Expires, DateTimeOffset? LastUsed);

/// <summary>
/// The <c>tokens</c> table in SQL. Creation and revocation NOTIFY <see cref="Schema.TokenChannel"/> in
/// the same transaction, so every node's cache hears of them when (and only if) they commit.
/// </summary>
internal static class TokenStore
{
    /// <summary>
    /// Creates the token, unless the store already holds <paramref name="maxTokens"/> (null: no limit, for the
    /// operator's command); null then. Concurrent creations may pass the limit by the few that count at once.
    /// </summary>
    public static async Task<(StoredToken Token, string Secret)?> CreateAsync(NpgsqlDataSource database, TokenSpec spec, int? maxTokens, CancellationToken cancellationToken)
    {
        var (id, secret) = RegistryTokens.Create();
        // One statement: the row and its announcement commit together, and nothing is announced when no row is made.
        await using var command = database.CreateCommand($"""
            WITH created AS (
                INSERT INTO {Schema.TokensTable} (id, hash, description, register, subscribe, admin, created_at, expires_at)
                SELECT @id, @hash, @description, @register, @subscribe, @admin, now(), @expires
                 WHERE @max IS NULL OR (SELECT count(*) FROM {Schema.TokensTable}) < @max
                RETURNING created_at)
            SELECT created_at, pg_notify(@channel, @id) FROM created
            """);
        command.Parameters.Add(new NpgsqlParameter("id", id));
        command.Parameters.Add(new NpgsqlParameter("hash", RegistryTokens.Hash(secret)));
        command.Parameters.Add(new NpgsqlParameter("description", spec.Description));
        command.Parameters.Add(new NpgsqlParameter("register", spec.Register));
        command.Parameters.Add(new NpgsqlParameter("subscribe", spec.Subscribe));
        command.Parameters.Add(new NpgsqlParameter("admin", spec.Admin));
        command.Parameters.Add(new NpgsqlParameter("expires", NpgsqlDbType.TimestampTz) { Value = (object?)spec.Expires?.UtcDateTime ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("max", NpgsqlDbType.Bigint) { Value = (object?)maxTokens ?? DBNull.Value });
        command.Parameters.Add(new NpgsqlParameter("channel", Schema.TokenChannel));
        if (await command.ExecuteScalarAsync(cancellationToken) is not DateTime created)
        {
            return null;
        }

        return (new StoredToken(id, spec.Description, spec.Register, spec.Subscribe, spec.Admin, Utc(created), spec.Expires, null), secret);
    }

    /// <summary>Deletes the token; false when there was none.</summary>
    public static async Task<bool> DeleteAsync(NpgsqlDataSource database, string id, CancellationToken cancellationToken)
    {
        await using var batch = database.CreateBatch();
        batch.BatchCommands.Add(Command($"DELETE FROM {Schema.TokensTable} WHERE id = @id", new NpgsqlParameter("id", id)));
        batch.BatchCommands.Add(Notify(id));
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        return batch.BatchCommands[0].RecordsAffected == 1;
    }

    public static async Task<List<StoredToken>> ListAsync(NpgsqlDataSource database, CancellationToken cancellationToken)
    {
        await using var command = database.CreateCommand($"""
            SELECT id, description, register, subscribe, admin, created_at, expires_at, last_used_at
            FROM {Schema.TokensTable} ORDER BY created_at, id
            """);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var tokens = new List<StoredToken>();
        while (await reader.ReadAsync(cancellationToken))
        {
            tokens.Add(new StoredToken(reader.GetString(0), reader.GetString(1), reader.GetFieldValue<string[]>(2), reader.GetFieldValue<string[]>(3),
                reader.GetBoolean(4), Utc(reader.GetDateTime(5)), reader.IsDBNull(6) ? null : Utc(reader.GetDateTime(6)),
                reader.IsDBNull(7) ? null : Utc(reader.GetDateTime(7))));
        }

        return tokens;
    }

    /// <summary>Whether the token <paramref name="id"/> is still stored (not revoked; its expiry is the cache's to check).</summary>
    public static async Task<bool> ExistsAsync(NpgsqlDataSource database, string id, CancellationToken cancellationToken)
    {
        await using var command = database.CreateCommand($"SELECT EXISTS (SELECT 1 FROM {Schema.TokensTable} WHERE id = @id)");
        command.Parameters.Add(new NpgsqlParameter("id", id));
        return (bool)(await command.ExecuteScalarAsync(cancellationToken))!;
    }

    /// <summary>What a node's cache needs of every token.</summary>
    public static async Task<List<(byte[] Hash, Grant Grant)>> LoadAsync(NpgsqlDataSource database, CancellationToken cancellationToken)
    {
        await using var command = database.CreateCommand($"SELECT id, hash, register, subscribe, admin, expires_at FROM {Schema.TokensTable}");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var tokens = new List<(byte[], Grant)>();
        while (await reader.ReadAsync(cancellationToken))
        {
            var grant = new Grant(reader.GetString(0), reader.GetFieldValue<string[]>(2), reader.GetFieldValue<string[]>(3), reader.GetBoolean(4),
                reader.IsDBNull(5) ? null : Utc(reader.GetDateTime(5)), stored: true);
            tokens.Add((reader.GetFieldValue<byte[]>(1), grant));
        }

        return tokens;
    }

    /// <summary>
    /// Deletes the tokens that expired more than <paramref name="after"/> ago (by the database's
    /// clock) and announces it in the same statement (once: the same payload for every row is
    /// one notification). Returns the tokens deleted, once the deletion has committed, and how
    /// long until the next token is due to go, by the same clock (null when none expires; the
    /// largest expiry, 9999-12-31T23:59:59.9999999Z, is stored as infinity and never does).
    /// </summary>
    public static async Task<(List<(string Id, DateTimeOffset Expired)> Forgotten, TimeSpan? Next)> ForgetExpiredAsync(
        NpgsqlDataSource database, TimeSpan after, CancellationToken cancellationToken)
    {
        await using var batch = database.CreateBatch();
        batch.BatchCommands.Add(Command($"""
            WITH gone AS (
                DELETE FROM {Schema.TokensTable} WHERE expires_at < now() - @after RETURNING id, expires_at)
            SELECT id, expires_at, pg_notify(@channel, 'expired') FROM gone
            """,
            new NpgsqlParameter("after", after),
            new NpgsqlParameter("channel", Schema.TokenChannel)));
        batch.BatchCommands.Add(Command(
            $"SELECT extract(epoch FROM min(expires_at) + @after - now()) FROM {Schema.TokensTable} WHERE expires_at < 'infinity'",
            new NpgsqlParameter("after", after)));
        var forgotten = new List<(string, DateTimeOffset)>();
        double? seconds;
        await using (var reader = await batch.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                forgotten.Add((reader.GetString(0), Utc(reader.GetDateTime(1))));
            }

            await reader.NextResultAsync(cancellationToken);
            await reader.ReadAsync(cancellationToken);
            seconds = reader.IsDBNull(0) ? null : (double)reader.GetDecimal(0);
        }

        // At most 30,000 years, so a TimeSpan holds it.
        return (forgotten, seconds is { } s ? TimeSpan.FromSeconds(Math.Min(s, 1e12)) : null);
    }

    /// <summary>
    /// Records when tokens were last used, never moving a time backwards (another node may have
    /// written a later one). Rows are locked in the ids' order, so two nodes' flushes of the same
    /// tokens wait for each other instead of deadlocking.
    /// </summary>
    public static async Task RecordUseAsync(NpgsqlDataSource database, string[] ids, DateTime[] times, CancellationToken cancellationToken)
    {
        await using var command = database.CreateCommand($"""
            WITH used AS (
                SELECT t.id, u.at
                  FROM {Schema.TokensTable} AS t
                  JOIN unnest(@ids, @times) AS u(id, at) ON t.id = u.id
                 ORDER BY t.id
                   FOR NO KEY UPDATE OF t)
            UPDATE {Schema.TokensTable} AS t SET last_used_at = greatest(t.last_used_at, used.at)
              FROM used
             WHERE t.id = used.id
            """);
        command.Parameters.Add(new NpgsqlParameter("ids", ids));
        command.Parameters.Add(new NpgsqlParameter("times", NpgsqlDbType.Array | NpgsqlDbType.TimestampTz) { Value = times });
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private static NpgsqlBatchCommand Command(string sql, params NpgsqlParameter[] parameters)
    {
        var command = new NpgsqlBatchCommand(sql);
        command.Parameters.AddRange(parameters);
        return command;
    }

    private static NpgsqlBatchCommand Notify(string id) =>
        Command("SELECT pg_notify(@channel, @id)", new NpgsqlParameter("channel", Schema.TokenChannel), new NpgsqlParameter("id", id));

    private static DateTimeOffset Utc(DateTime value) => new(DateTime.SpecifyKind(value, DateTimeKind.Utc));
}
