using System.Buffers;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Registry.Model;

/// <summary>Reads a request body within the configured limit; past it, 413.</summary>
internal sealed class RequestBody(IOptions<LimitsOptions> limits)
{
    private static ReadOnlySpan<byte> Utf8Bom => [0xEF, 0xBB, 0xBF];

    public async Task<(ReadOnlyMemory<byte> Body, ProblemHttpResult? TooLarge)> ReadAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        var limit = limits.Value.MaxBodyBytes;
        if (request.ContentLength > limit)
        {
            return (default, TooLarge(limit));
        }

        var body = new ArrayBufferWriter<byte>((int)Math.Clamp(request.ContentLength ?? 1024, 1, limit));
        var reader = request.BodyReader;
        while (true)
        {
            var read = await reader.ReadAsync(cancellationToken);
            if (body.WrittenCount + read.Buffer.Length > limit)
            {
                reader.AdvanceTo(read.Buffer.End);
                return (default, TooLarge(limit));
            }

            foreach (var segment in read.Buffer)
            {
                body.Write(segment.Span);
            }

            reader.AdvanceTo(read.Buffer.End);
            if (read.IsCompleted)
            {
                // A byte order mark, as Windows tools write before UTF-8 (PowerShell's Out-File), is not part of the
                // document: RFC 8259 lets a reader ignore it, and it would be "not valid JSON (line 1, byte 1)".
                var written = body.WrittenMemory;
                return (written.Span.StartsWith(Utf8Bom) ? written[Utf8Bom.Length..] : written, null);
            }
        }
    }

    private static ProblemHttpResult TooLarge(int limit) => TypedResults.Problem(
        statusCode: StatusCodes.Status413PayloadTooLarge,
        title: "Request body too large",
        detail: $"The request body is larger than {limit} bytes.");
}
