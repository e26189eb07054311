using Microsoft.Extensions.Configuration;
using Registry.ChangeFeed;
using Registry.Edge;
using Registry.Leases;
using Registry.Model;
using Registry.Registration;
using Registry.Storage;
using Registry.Subscription;

namespace Registry.Tests;

/// <summary>appsettings.example.json documents every setting with its real default.</summary>
public sealed class ConfigurationTests
{
    public static TheoryData<string, Type> Sections => new()
    {
        { "Registry:Database", typeof(DatabaseOptions) },
        { "Registry:Limits", typeof(LimitsOptions) },
        { "Registry:Leases", typeof(LeaseOptions) },
        { "Registry:Subscriptions", typeof(SubscriptionOptions) },
        { "Registry:Sessions", typeof(Registry.Sessions.SessionOptions) },
        { "Registry:Writes", typeof(WriteOptions) },
        { "Registry:ChangeFeed", typeof(ChangeFeedOptions) },
        { "Registry:RateLimit", typeof(RateLimitOptions) },
        { "Registry:Network", typeof(Registry.Edge.NetworkOptions) },
        { "Registry:Drain", typeof(Registry.Drain.DrainOptions) },
        { "Registry:Membership", typeof(Registry.Membership.MembershipOptions) },
        { "Registry:Probes", typeof(Registry.Probes.ProbeOptions) },
    };

    [Theory]
    [MemberData(nameof(Sections))]
    public void TheExampleListsEverySettingWithItsDefault(string section, Type options)
    {
        var example = new ConfigurationBuilder()
            .AddJsonFile(Path.Combine(RepositoryRoot(), "appsettings.example.json"))
            .Build()
            .GetSection(section);
        var defaults = Activator.CreateInstance(options)!;
        var bound = example.Get(options)!;

        foreach (var property in options.GetProperties())
        {
            if (property.GetValue(defaults) is Array empty && empty.Length == 0)
            {
                // Configuration has no empty arrays: the example shows [], which binds to none.
                Assert.Empty((Array)property.GetValue(bound)!);
                continue;
            }

            Assert.True(example[property.Name] is not null, $"{section}:{property.Name} is missing from appsettings.example.json");
            Assert.True(Equals(property.GetValue(defaults), property.GetValue(bound)),
                $"{section}:{property.Name} is {property.GetValue(bound)} in the example but defaults to {property.GetValue(defaults)}");
        }
    }

    internal static string RepositoryRoot()
    {
        var folder = new DirectoryInfo(AppContext.BaseDirectory);
        while (folder is not null && !File.Exists(Path.Combine(folder.FullName, "Registry.sln")))
        {
            folder = folder.Parent;
        }

        return folder?.FullName ?? throw new InvalidOperationException("Registry.sln not found above " + AppContext.BaseDirectory);
    }
}
