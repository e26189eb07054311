using System.Net;

namespace Registry.Access;

/// <summary>
/// What stands in for credentials on an Open node against the browsers on its machine. A page from another origin may
/// not call it: a cross-site form or fetch needs no preflight to POST, and would register and unregister through a
/// developer's browser. And a node that listens only on loopback answers only requests addressed to a loopback name:
/// a page whose own name its DNS server points at 127.0.0.1 (DNS rebinding) is same-origin for the browser.
/// Clients other than browsers send no <c>Origin</c> and use the address they connect to, and pass. A node Open only
/// because nothing was configured (the one-command start) answers no proxy either: one on its machine (nginx for TLS,
/// say) would make it reachable from anywhere, without credentials, while every request still came from loopback.
/// </summary>
internal static class OpenNodeGuard
{
    /// <summary>
    /// Headers a proxy adds to what it forwards (most add one; a bare nginx <c>proxy_pass</c> adds none, which no
    /// header check can tell from a client on the machine), and those the forwarded-headers middleware leaves in the
    /// place of the ones it took from a trusted proxy.
    /// </summary>
    private static readonly string[] ProxyHeaders =
        ["Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-IP", "Via", "X-Original-For", "X-Original-Host", "X-Original-Proto"];

    public static IResult? Refusal(HttpRequest request, AccessState access)
    {
        if (access.ForThisMachineOnly && ProxyHeaders.FirstOrDefault(request.Headers.ContainsKey) is { } forwarded)
        {
            return TypedResults.Problem(
                statusCode: StatusCodes.Status400BadRequest,
                title: "Forwarded request refused",
                detail: $"{forwarded}: this node runs Open only for clients on its own machine (nothing configured it otherwise) and answers no proxy; " +
                    "behind a proxy, set Registry:Auth:Mode (Required, with a credential).");
        }

        if (access.LoopbackOnly && !IsLoopbackName(request.Host.Host))
        {
            return TypedResults.Problem(
                statusCode: StatusCodes.Status400BadRequest,
                title: "Host not allowed",
                detail: $"Host: this Open node listens only on loopback and answers requests addressed to localhost, 127.0.0.1 or [::1], not '{request.Host.Host}'.");
        }

        // A browser's own word (no page can set it) settles it first: a proxy may have changed the Host the page used.
        var origins = request.Headers.Origin;
        if (origins.Count > 0 && request.Headers["Sec-Fetch-Site"] != "same-origin" && (origins.Count > 1 || !SameOrigin(origins[0]!, request)))
        {
            return TypedResults.Problem(
                statusCode: StatusCodes.Status403Forbidden,
                title: "Cross-origin call refused",
                detail: $"Origin: a page from {origins} may not call this node, which runs Open (without credentials).");
        }

        return null;
    }

    private static bool IsLoopbackName(string host) =>
        host.Equals("localhost", StringComparison.OrdinalIgnoreCase)
        || (IPAddress.TryParse(host.Trim('[', ']'), out var address) && IPAddress.IsLoopback(address));

    /// <summary>Whether the page's origin is this node as the request addressed it (the Swagger UI it serves).</summary>
    private static bool SameOrigin(string origin, HttpRequest request)
    {
        if (!Uri.TryCreate(origin, UriKind.Absolute, out var page) || page.Port != (request.Host.Port ?? (request.IsHttps ? 443 : 80)))
        {
            return false;
        }

        var host = request.Host.Host.Trim('[', ']');
        return IPAddress.TryParse(page.DnsSafeHost, out var pageAddress) && IPAddress.TryParse(host, out var address)
            ? pageAddress.Equals(address)
            : page.DnsSafeHost.Equals(host, StringComparison.OrdinalIgnoreCase);
    }
}
