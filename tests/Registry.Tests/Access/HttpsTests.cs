using System.Net;
using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Registry.Tests.Infrastructure;

namespace Registry.Tests.Access;

/// <summary>TLS the way appsettings.example.json shows it: a Kestrel HTTPS endpoint with a PEM certificate and key.</summary>
[Collection(AccessTestsDefinition.Name)]
public sealed class HttpsTests(AccessCluster cluster)
{
    [Fact]
    public async Task ANodeServesHttpsWithTheConfiguredCertificate()
    {
        var folder = Directory.CreateTempSubdirectory("registry-tls-").FullName;
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=registry.test", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        await File.WriteAllTextAsync(Path.Combine(folder, "tls.crt"), certificate.ExportCertificatePem());
        await File.WriteAllTextAsync(Path.Combine(folder, "tls.key"), key.ExportPkcs8PrivateKeyPem());

        await using var node = cluster.Start(new()
        {
            ["Kestrel:Endpoints:Https:Url"] = "https://127.0.0.1:0",
            ["Kestrel:Endpoints:Https:Certificate:Path"] = Path.Combine(folder, "tls.crt"),
            ["Kestrel:Endpoints:Https:Certificate:KeyPath"] = Path.Combine(folder, "tls.key"),
        });
        node.UseKestrel();
        node.StartServer();
        var address = node.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();

        X509Certificate2? presented = null;
        using var handler = new SocketsHttpHandler
        {
            SslOptions = new SslClientAuthenticationOptions
            {
                // Trust exactly the certificate written above, nothing else.
                RemoteCertificateValidationCallback = (_, served, _, _) =>
                {
                    presented = served is null ? null : X509CertificateLoader.LoadCertificate(served.GetRawCertData());
                    return served is not null && served.GetCertHashString() == certificate.GetCertHashString();
                },
            },
        };
        using var client = new HttpClient(handler) { BaseAddress = new Uri(address) };
        client.DefaultRequestHeaders.TryAddWithoutValidation("Authorization", AccessCluster.Bearer(AccessCluster.Bootstrap));

        using var response = await client.GetAsync(new Uri("/v1/services", UriKind.Relative));

        Assert.StartsWith("https://127.0.0.1:", address, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(certificate.Thumbprint, presented?.Thumbprint);
        presented?.Dispose();
        Directory.Delete(folder, recursive: true);
    }
}
