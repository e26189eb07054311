namespace Registry.Client.Tests.Infrastructure;

/// <summary>Awaiting a subscription's answers: on its change stream, with a deadline, never by sleeping.</summary>
public static class Answers
{
    /// <summary>The first answer (the current one included) that satisfies <paramref name="condition"/>.</summary>
    public static async Task<RegistryAnswer> WaitForAsync(this RegistrySubscription subscription, Func<RegistryAnswer, bool> condition, TimeSpan? timeout = null)
    {
        using var deadline = new CancellationTokenSource(timeout ?? ClientTest.Patience);
        try
        {
            await foreach (var answer in subscription.WatchAsync(deadline.Token))
            {
                if (condition(answer))
                {
                    return answer;
                }
            }
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested)
        {
        }

        throw new TimeoutException($"No answer matched within {timeout ?? ClientTest.Patience}; the last was {Describe(subscription.Current)}.");
    }

    public static bool Has(this RegistryAnswer answer, ProviderInstance instance) =>
        answer.Endpoints.Any(e => e.Application == instance.Application && e.Protocol == instance.Protocol && e.Addr == instance.Addr);

    public static string Describe(RegistryAnswer? answer) =>
        answer is null ? "none" : $"{answer.Version} [{string.Join(", ", answer.Endpoints)}]";
}
