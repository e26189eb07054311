using System.Reflection;
using Microsoft.AspNetCore.Mvc;

namespace Registry.Model;

/// <summary>
/// A query parameter an endpoint binds is given once. Given twice, minimal APIs would bind both
/// values joined by a comma (<c>?probePath=/a&amp;probePath=/b</c> probing <c>/a,/b</c>;
/// <c>?version=V&amp;version=V</c> never current, so every poll answered at once): a 400 naming
/// it instead. Names match whatever their case, as binding matches them. A middleware rather than
/// an endpoint filter: a filter costs every request of the endpoint an invocation context and a
/// frame held for as long as the request (a parked poll's whole wait).
/// </summary>
internal static class QueryParameters
{
    /// <summary>Records on each endpoint the query parameters its handler binds, for <see cref="UseSingleQueryValues"/>.</summary>
    public static TBuilder RequireSingleQueryValues<TBuilder>(this TBuilder builder)
        where TBuilder : IEndpointConventionBuilder
    {
        builder.Finally(endpoint =>
        {
            var names = endpoint.Metadata.OfType<MethodInfo>().FirstOrDefault()?.GetParameters()
                .Select(p => p.GetCustomAttribute<FromQueryAttribute>() is { } query ? query.Name ?? p.Name : null)
                .OfType<string>()
                .ToArray();
            if (names is { Length: > 0 })
            {
                endpoint.Metadata.Add(new BoundQueryParameters(names));
            }
        });
        return builder;
    }

    /// <summary>Refuses a request that gives a parameter its endpoint binds more than once (after authorization).</summary>
    public static IApplicationBuilder UseSingleQueryValues(this IApplicationBuilder app) => app.Use(static (http, next) =>
    {
        if (!http.Request.QueryString.HasValue || http.GetEndpoint()?.Metadata.GetMetadata<BoundQueryParameters>() is not { } bound)
        {
            return next(http);
        }

        var query = http.Request.Query;
        Errors? errors = null;
        foreach (var name in bound.Names)
        {
            if (query.TryGetValue(name, out var values) && values.Count > 1)
            {
                (errors ??= new()).Add(name, $"must be given once, not {values.Count} times");
            }
        }

        return errors is null ? next(http) : Problems.Invalid(errors).ExecuteAsync(http);
    });

    private sealed record BoundQueryParameters(string[] Names);
}
