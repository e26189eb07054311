namespace Registry.Membership;

/// <summary>Wires membership: who this node is, where it is reached, and who else is live.</summary>
internal static class MembershipServiceExtensions
{
    public static IServiceCollection AddRegistryMembership(this IServiceCollection services)
    {
        services.AddOptions<MembershipOptions>().BindConfiguration(RegistryOptions.Section(nameof(RegistryOptions.Membership)))
            .Validate(o => o.NodeTimeout > TimeSpan.Zero && o.ForgetAfter > o.NodeTimeout, "Registry:Membership needs a positive NodeTimeout and ForgetAfter longer than it.")
            .Validate(o => o.AdvertisedUrl.Length == 0 || Uri.TryCreate(o.AdvertisedUrl, UriKind.Absolute, out var url) && url.Scheme is "http" or "https",
                "Registry:Membership:AdvertisedUrl must be an absolute http or https URL, or empty.")
            .ValidateOnStart();
        services.AddSingleton<NodeIdentity>();
        services.AddSingleton<AdvertisedUrl>();
        return services;
    }
}
