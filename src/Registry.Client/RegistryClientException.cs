using System.Net;

namespace Registry.Client;

/// <summary>
/// Anything the registry client reports about a request: catch this to handle every failure.
/// <see cref="RegistryClientException"/> (refused: retrying will not change it) and
/// <see cref="RegistryUnavailableException"/> (transient: retrying will) derive from it.
/// </summary>
public abstract class RegistryException : Exception
{
    /// <summary>Creates the exception.</summary>
    protected RegistryException()
    {
    }

    /// <summary>Creates the exception.</summary>
    protected RegistryException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    protected RegistryException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with what the registry answered.</summary>
    protected RegistryException(string message, HttpStatusCode? statusCode, RegistryProblem? problem, Exception? innerException)
        : base(message, innerException)
    {
        StatusCode = statusCode;
        Problem = problem;
    }

    /// <summary>The status the registry answered, when it answered.</summary>
    public HttpStatusCode? StatusCode { get; }

    /// <summary>The registry's problem document (RFC 9457), when it sent one.</summary>
    public RegistryProblem? Problem { get; }
}

/// <summary>
/// The registry refused a request for a reason that retrying will not change (e.g. <c>400</c> for
/// invalid input); <see cref="RegistryException.Problem"/> names the field and the reason.
/// </summary>
public class RegistryClientException : RegistryException
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
        : base(message, statusCode, null, null)
    {
    }

    /// <summary>Creates the exception with the status and the problem document the registry answered.</summary>
    public RegistryClientException(string message, HttpStatusCode? statusCode, RegistryProblem? problem)
        : base(message, statusCode, problem, null)
    {
    }
}

/// <summary>
/// The registry did not accept the credential: <c>401</c> (missing, malformed, unknown, expired or
/// revoked token) or <c>403</c> (a valid token without the scope for this application, which
/// <see cref="RegistryException.Problem"/> names). Not an outage: the client does not fail over or
/// retry it with backoff.
/// </summary>
public sealed class RegistryAccessDeniedException : RegistryClientException
{
    /// <summary>Creates the exception.</summary>
    public RegistryAccessDeniedException()
    {
    }

    /// <summary>Creates the exception.</summary>
    public RegistryAccessDeniedException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception.</summary>
    public RegistryAccessDeniedException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception with the status and the problem document the registry answered.</summary>
    public RegistryAccessDeniedException(string message, HttpStatusCode statusCode, RegistryProblem? problem)
        : base(message, statusCode, problem)
    {
    }

    /// <summary><see langword="true"/> for <c>401</c>: the token itself was not accepted (rather than lacking a scope).</summary>
    public bool IsAuthenticationFailure => StatusCode == HttpStatusCode.Unauthorized;
}

/// <summary>
/// No registry server could serve the request now (unreachable, timed out, <c>5xx</c>, <c>429</c>):
/// a transient condition that the client's background loops retry with backoff.
/// </summary>
public sealed class RegistryUnavailableException : RegistryException
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

    /// <summary>Creates the exception with the server's <c>Retry-After</c>, status and problem document.</summary>
    public RegistryUnavailableException(string message, TimeSpan? retryAfter, HttpStatusCode? statusCode, RegistryProblem? problem, Exception? innerException)
        : base(message, statusCode, problem, innerException) => RetryAfter = retryAfter;

    /// <summary>How long the registry asked clients to wait (<c>Retry-After</c>), when it did.</summary>
    public TimeSpan? RetryAfter { get; }

    /// <summary>How many nodes took the request without answering it (they may still act on it).</summary>
    internal int Unanswered { get; init; }
}
