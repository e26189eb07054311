using System.Net;

namespace Registry.Client;

/// <summary>The registry refused a request for a reason that retrying will not change (e.g. <c>400</c> for invalid input).</summary>
public class RegistryClientException : Exception
{
    /// <summary>Creates the exception.</summary>
    public RegistryClientException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public RegistryClientException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public RegistryClientException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with the status the registry answered.</summary>
    public RegistryClientException(string message, HttpStatusCode? statusCode)
        : base(message) => StatusCode = statusCode;

    /// <summary>The status the registry answered, when it answered.</summary>
    public HttpStatusCode? StatusCode { get; }
}

/// <summary>
/// No registry server could serve the request now (unreachable, timed out, <c>5xx</c>, <c>429</c>):
/// a transient condition that the client's background loops retry with backoff.
/// </summary>
public sealed class RegistryUnavailableException : RegistryClientException
{
    /// <summary>Creates the exception.</summary>
    public RegistryUnavailableException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public RegistryUnavailableException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public RegistryUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with the server's <c>Retry-After</c>.</summary>
    public RegistryUnavailableException(string message, TimeSpan? retryAfter, Exception? innerException)
        : base(message, innerException) => RetryAfter = retryAfter;

    /// <summary>How long the registry asked clients to wait (<c>Retry-After</c>), when it did.</summary>
    public TimeSpan? RetryAfter { get; }
}
