using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Microsoft.OpenApi;
using Swashbuckle.AspNetCore.Swagger;
using Swashbuckle.AspNetCore.SwaggerGen;

namespace Registry.Operations;

/// <summary>
/// Serves each OpenAPI document as bytes built once, not on every request as Swashbuckle's
/// middleware does (its maintainers leave caching to the application, issue #1970): building
/// reflects over every endpoint and reads the XML comments, and serialising writes ~90 KB, 17 ms
/// of CPU a request here, for anyone who asks. The endpoints cannot change while the node runs.
/// The bytes are what that middleware writes (OpenAPI 3.0, UTF-8 without a BOM).
/// </summary>
internal sealed class CachedOpenApiDocuments(SwaggerGenerator generator)
{
    public const string Route = "/openapi/{documentName}.json";

    // One entry per configured document: an unknown name throws and is not stored.
    private readonly ConcurrentDictionary<string, byte[]> _documents = new(StringComparer.Ordinal);

    /// <summary>The document as JSON, or null when there is no document of that name.</summary>
    public byte[]? Json(string documentName)
    {
        try
        {
            return _documents.GetOrAdd(documentName, name => Serialize(generator.GetSwagger(name)));
        }
        catch (UnknownSwaggerDocument)
        {
            return null;
        }
    }

    private static byte[] Serialize(OpenApiDocument document)
    {
        using var text = new StringWriter(CultureInfo.InvariantCulture);
        document.SerializeAs(OpenApiSpecVersion.OpenApi3_0, new OpenApiJsonWriter(text));
        return new UTF8Encoding(false).GetBytes(text.ToString());
    }
}
