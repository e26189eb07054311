using System.Text.Json;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Options;
using Registry.Model;

namespace Registry.Registration;

/// <summary>
/// A lease document sent with its Content-Length in one write. A registration is answered
/// once its batch has committed, after an await; the framework's JSON result would then go
/// out chunked, its closing chunk a second send on the socket for every request.
/// </summary>
internal sealed class LeaseResult(int statusCode, LeaseDocument lease, string? location = null) : IResult
{
    public Task ExecuteAsync(HttpContext httpContext)
    {
        var options = httpContext.RequestServices.GetRequiredService<IOptions<JsonOptions>>().Value.SerializerOptions;
        var body = JsonSerializer.SerializeToUtf8Bytes(lease, options);
        var response = httpContext.Response;
        response.StatusCode = statusCode;
        if (location is not null)
        {
            response.Headers.Location = location;
        }

        response.ContentType = "application/json; charset=utf-8";
        response.ContentLength = body.Length;
        return response.Body.WriteAsync(body, httpContext.RequestAborted).AsTask();
    }
}
