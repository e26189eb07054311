using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace Registry.Operations;

/// <summary>
/// Serves each OpenAPI document as bytes built once, not on every request as Swashbuckle's
/// middleware does (its maintainers leave caching to the application, issue #1970): building
/// reflects over every endpoint and reads the XML comments, and serialising writes ~90 KB, 17 ms
/// of CPU a request here, for anyone who asks. The endpoints cannot change while the node runs.
/// The bytes are what that middleware writes (OpenAPI 3.0, UTF-8 without a BOM). A burst of
/// first requests builds it once: the others wait for that build.
/// </summary>
internal sealed class CachedOpenApiDocuments(SwaggerGenerator generator, IOptions<SwaggerGeneratorOptions> options)
{
    public const string Route = "/openapi/{documentName}.json";

    // Only configured documents have an entry, whatever names are asked for.
    private readonly ConcurrentDictionary<string, Lazy<byte[]>> _documents = new(StringComparer.Ordinal);

    /// <summary>The document as JSON, or null when there is no document of that name.</summary>
    public byte[]? Json(string documentName) =>
        options.Value.SwaggerDocs.ContainsKey(documentName)
            ? _documents.GetOrAdd(documentName, name => new Lazy<byte[]>(() => Serialize(generator.GetSwagger(name)))).Value
            : null;

    private static byte[] Serialize(OpenApiDocument document)
    {
        using var text = new StringWriter(CultureInfo.InvariantCulture);
        document.SerializeAs(OpenApiSpecVersion.OpenApi3_0, new OpenApiJsonWriter(text));
        return new UTF8Encoding(false).GetBytes(text.ToString());
    }
}
