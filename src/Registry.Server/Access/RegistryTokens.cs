using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;

namespace Registry.Access;

/// <summary>Registry token secrets: <c>rgt_</c> and 256 random bits in base64url; only their SHA-256 is kept.</summary>
internal static class RegistryTokens
{
    public const string Prefix = "rgt_";

    public const string IdPrefix = "tok_";

    private static readonly System.Buffers.SearchValues<char> Base64UrlCharacters =
        System.Buffers.SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");

    /// <summary>A new secret and its public id.</summary>
    public static (string Id, string Secret) Create() =>
        (IdPrefix + Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(12)), Prefix + Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32)));

    /// <summary>Whether <paramref name="id"/> has the shape of an id <see cref="Create"/> gives: <c>tok_</c> and 12 bytes in base64url.</summary>
    public static bool IsId(string id) =>
        id.Length == IdPrefix.Length + 16 && id.StartsWith(IdPrefix, StringComparison.Ordinal)
        && id.AsSpan(IdPrefix.Length).IndexOfAnyExcept(Base64UrlCharacters) < 0;

    public static byte[] Hash(string secret) => SHA256.HashData(Encoding.UTF8.GetBytes(secret));
}
