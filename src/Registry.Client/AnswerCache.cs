using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace Registry.Client;

/// <summary>
/// The last answer of one subscription on disk, so that a consumer that starts while every
/// registry node is down still begins from the endpoints it last knew. The file names the
/// subscription it belongs to; a corrupt file or one of another subscription is ignored.
/// A running subscription rewrites its file every <see cref="RefreshEvery"/>, whether or not the
/// registry answers, so the files older than the retention (at least an hour, whatever another
/// process sharing the folder set; <see cref="ForgetUnused"/>) belong to subscriptions no longer made.
/// </summary>
internal sealed class AnswerCache(string path, TimeProvider time, ILogger logger)
{
    /// <summary>How often a running subscription writes its file even when the answer has not changed.</summary>
    public static readonly TimeSpan RefreshEvery = TimeSpan.FromMinutes(15);

    private const string FilePrefix = "registry-subscription-";

    private DateTimeOffset? _triedAt;

    public string Path { get; } = path;

    /// <summary>Whether the file is due to be written even though the answer has not changed: not yet tried by this subscription, or <see cref="RefreshEvery"/> ago.</summary>
    public bool Due => _triedAt is not { } at || time.GetUtcNow() - at >= RefreshEvery;

    /// <summary>One file per distinct subscription, named by a hash of its canonical body.</summary>
    public static string PathFor(string directory, byte[] subscriptionBody) =>
        System.IO.Path.Combine(directory, $"{FilePrefix}{Convert.ToHexString(SHA256.HashData(subscriptionBody))[..16].ToLowerInvariant()}.json");

    /// <summary>Deletes the subscription files (and torn writes' leftovers) in <paramref name="directory"/> last written before <paramref name="before"/>.</summary>
    public static void ForgetUnused(string directory, DateTimeOffset before, ILogger logger)
    {
        string[] files;
        try
        {
            files = Directory.Exists(directory) ? Directory.GetFiles(directory, FilePrefix + "*") : [];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.CacheSweepFailed(logger, directory, e.Message);
            return;
        }

        foreach (var file in files)
        {
            try
            {
                // A file gone meanwhile (a write's temporary file moved into place) reads as written in 1601.
                var written = File.GetLastWriteTimeUtc(file);
                if (written < before.UtcDateTime && File.Exists(file))
                {
                    File.Delete(file);
                    Log.CacheForgotten(logger, file, written);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // In use by another process, say: the rest are still looked at.
                Log.CacheSweepFailed(logger, file, e.Message);
            }
        }
    }

    /// <summary>The answer the file holds and up to when (by the wall clock) it was known to be the registry's; null when there is none to take.</summary>
    public async Task<(RegistryAnswer Answer, DateTimeOffset? KnownAt)?> TryLoadAsync(byte[] subscriptionBody, CancellationToken cancellationToken)
    {
        if (!File.Exists(Path))
        {
            return null;
        }

        CacheDocument? document;
        try
        {
            var bytes = await File.ReadAllBytesAsync(Path, cancellationToken).ConfigureAwait(false);
            document = JsonSerializer.Deserialize(bytes, ClientJson.Default.CacheDocument);
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            Log.CacheIgnored(logger, Path, $"unreadable ({e.Message})");
            return null;
        }

        if (document?.Answer?.Endpoints is null || document.Subscription?.Subscribes is null || document.Format != CacheDocument.CurrentFormat)
        {
            Log.CacheIgnored(logger, Path, $"not a {CacheDocument.CurrentFormat} file");
            return null;
        }

        // The version goes back to the registry in a query string; one it would refuse (400) must not stop the subscription.
        if (document.Answer.Version.Length is 0 or > 128 || document.Answer.Version.Any(c => c is < '!' or > '~'))
        {
            Log.CacheIgnored(logger, Path, "its version is not one the registry gives");
            return null;
        }

        var owner = JsonSerializer.SerializeToUtf8Bytes(document.Subscription, ClientJson.Default.SubscriptionDocument);
        if (!owner.AsSpan().SequenceEqual(subscriptionBody))
        {
            Log.CacheIgnored(logger, Path, "it belongs to another subscription");
            return null;
        }

        Log.CacheLoaded(logger, document.Answer.Version, Path, document.Answer.Endpoints.Count);
        return (document.Answer, document.KnownAt);
    }

    public async Task TryWriteAsync(SubscriptionDocument subscription, RegistryAnswer answer, DateTimeOffset? knownAt, CancellationToken cancellationToken)
    {
        // Written aside and moved into place, so a crash mid-write never leaves a torn file.
        var temporary = $"{Path}.{Guid.NewGuid():N}.tmp";
        try
        {
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(Path)!);
            var bytes = JsonSerializer.SerializeToUtf8Bytes(new CacheDocument(CacheDocument.CurrentFormat, subscription, answer, knownAt), ClientJson.Default.CacheDocument);
            await File.WriteAllBytesAsync(temporary, bytes, cancellationToken).ConfigureAwait(false);
            File.Move(temporary, Path, overwrite: true);
        }
#pragma warning disable CA1031 // A file the subscription cannot write (a full or read-only disk, a bad path) must not end it.
        catch (Exception e) when (e is not OperationCanceledException)
#pragma warning restore CA1031
        {
            Log.CacheWriteFailed(logger, Path, e.Message);
            TryDelete(temporary);
        }

        // Tried again with the next new answer, else after RefreshEvery: not on every poll, each with its warning.
        _triedAt = time.GetUtcNow();
    }

    private static void TryDelete(string file)
    {
        try
        {
            File.Delete(file);
        }
#pragma warning disable CA1031 // Nothing more to do: the next write uses another temporary name.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }
}
