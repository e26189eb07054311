using System.Reflection;
using Microsoft.AspNetCore.Mvc;

namespace Registry.Model;

/// <summary>
/// A query parameter an endpoint binds is given once. Given twice, minimal APIs would bind both
/// values joined by a comma (<c>?probePath=/a&amp;probePath=/b</c> probing <c>/a,/b</c>;
/// <c>?version=V&amp;version=V</c> never current, so every poll answered at once): a 400 naming
/// it instead. Names match whatever their case, as binding matches them.
/// </summary>
internal static class QueryParameters
{
    public static TBuilder RequireSingleQueryValues<TBuilder>(this TBuilder builder)
        where TBuilder : IEndpointConventionBuilder =>
        builder.AddEndpointFilterFactory((context, next) =>
        {
            var names = context.MethodInfo.GetParameters()
                .Select(p => p.GetCustomAttribute<FromQueryAttribute>() is { } query ? query.Name ?? p.Name : null)
                .OfType<string>()
                .ToArray();
            if (names.Length == 0)
            {
                return next;
            }

            return invocation =>
            {
                var query = invocation.HttpContext.Request.Query;
                Errors? errors = null;
                foreach (var name in names)
                {
                    if (query.TryGetValue(name, out var values) && values.Count > 1)
                    {
                        (errors ??= new()).Add(name, $"must be given once, not {values.Count} times");
                    }
                }

                return errors is null ? next(invocation) : ValueTask.FromResult<object?>(Problems.Invalid(errors));
            };
        });
}
