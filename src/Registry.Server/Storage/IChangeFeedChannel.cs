namespace Registry.Storage;

/// <summary>
/// A channel besides the registry's own that the node LISTENs on over the same connection
/// (tokens, for one). Its holder reloads whenever the connection is made again, since
/// notifications sent while it was down are lost.
/// </summary>
internal interface IChangeFeedChannel
{
    /// <summary>The NOTIFY channel.</summary>
    string Channel { get; }

    /// <summary>Loads everything again; called after LISTEN, before the node serves.</summary>
    Task ReloadAsync(CancellationToken cancellationToken);

    /// <summary>Runs on Npgsql's reading path: it must only hand the payload on, never block or throw.</summary>
    void Notified(string payload);
}
