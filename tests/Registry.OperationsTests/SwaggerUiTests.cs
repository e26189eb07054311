using System.Text.Json.Nodes;
using Microsoft.Playwright;
using Registry.OperationsTests.Infrastructure;

namespace Registry.OperationsTests;

/// <summary>
/// The Swagger UI in a real browser: Debian's headless Chromium (never a downloaded one)
/// opens /swagger on a real port, registers and subscribes through "Try it out" and reads
/// the answers off the page.
/// </summary>
[Collection(LiveRegistryDefinition.Name)]
public sealed class SwaggerUiTests(LiveRegistry registry) : IAsyncLifetime
{
    /// <summary>Debian's package; .ci/run installs it when missing.</summary>
    private const string Chromium = "/usr/bin/chromium";

    /// <summary>Generous: a loaded 2-core machine starts a browser slowly.</summary>
    private const float Timeout = 60_000;

    private IPlaywright? _playwright;
    private IBrowser? _browser;

    public async Task InitializeAsync()
    {
        _playwright = await Playwright.CreateAsync();
        _browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = Chromium,
            Headless = true,
            Timeout = Timeout,
            // Root needs --no-sandbox; the rest keeps the browser off the network and quiet.
            Args = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        });
    }

    public async Task DisposeAsync()
    {
        if (_browser is not null)
        {
            await _browser.DisposeAsync();
        }

        _playwright?.Dispose();
    }

    [Fact]
    public async Task TheSwaggerUiRegistersAndSubscribesThroughTryItOut()
    {
        var application = $"swagger_ui_{Guid.NewGuid():N}"[..24];
        var page = await _browser!.NewPageAsync();
        page.SetDefaultTimeout(Timeout);
        try
        {
            await RegisterAndSubscribeAsync(page, application);
        }
        catch
        {
            // What the page showed is the fastest way to see why a UI step failed.
            var screenshot = Path.Combine(Path.GetTempPath(), $"swagger-ui-failure-{Guid.NewGuid():N}.png");
            await page.ScreenshotAsync(new PageScreenshotOptions { Path = screenshot, FullPage = true });
            Console.Error.WriteLine($"Swagger UI screenshot: {screenshot}");
            throw;
        }
    }

    [Fact]
    public async Task TheAuthorizeButtonTakesABearerTokenThatTryItOutSends()
    {
        var page = await _browser!.NewPageAsync();
        page.SetDefaultTimeout(Timeout);
        try
        {
            await page.GotoAsync($"{registry.BaseAddress}/swagger/index.html");
            await page.Locator(".auth-wrapper button.authorize").ClickAsync();
            await page.Locator(".modal-ux input").FillAsync(registry.Token);
            await page.Locator(".modal-ux button.authorize").ClickAsync();
            await page.Locator(".modal-ux button.btn-done").ClickAsync();

            // An admin-only call: the UI must send the token it was given.
            var list = page.Locator("#operations-Tokens-ListTokens");
            await list.Locator(".opblock-summary").First.ClickAsync();
            await list.Locator("button.try-out__btn").ClickAsync();
            await list.Locator("button.execute").ClickAsync();
            var live = list.Locator(".live-responses-table .response");
            await live.First.WaitForAsync();
            var status = (await live.First.Locator(".response-col_status").InnerTextAsync()).Trim();
            var curl = await list.Locator(".curl-command").InnerTextAsync();

            Assert.Equal("200", status);
            Assert.Contains($"Authorization: Bearer {registry.Token}", curl, StringComparison.Ordinal);
        }
        catch
        {
            var screenshot = Path.Combine(Path.GetTempPath(), $"swagger-ui-failure-{Guid.NewGuid():N}.png");
            await page.ScreenshotAsync(new PageScreenshotOptions { Path = screenshot, FullPage = true });
            Console.Error.WriteLine($"Swagger UI screenshot: {screenshot}");
            throw;
        }
    }

    private async Task RegisterAndSubscribeAsync(IPage page, string application)
    {
        await page.GotoAsync($"{registry.BaseAddress}/swagger/index.html");

        // Register: the request body is prefilled with API.md's provider document.
        var register = page.Locator("#operations-Providers-Register");
        var prefilled = await TryItOutAsync(register);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(Registry.Operations.OpenApiDocumentation.ProviderExample), JsonNode.Parse(prefilled)), prefilled);
        var registered = await ExecuteAsync(register, Registry.Tests.Infrastructure.Http.Provider(application, "127.0.0.1:8080", """{"cluster":"small"}"""));
        Assert.Equal("201", registered.Status);
        Assert.Equal(application, (string?)JsonNode.Parse(registered.Body)!["application"]);

        // Subscribe: prefilled with API.md's subscription document; ask for what was registered.
        var subscribe = page.Locator("#operations-Consumers-Subscribe");
        prefilled = await TryItOutAsync(subscribe);
        Assert.Contains("test_provider1", prefilled, StringComparison.Ordinal);
        var answered = await ExecuteAsync(subscribe, $$"""{"subscribes":[{"provider":"{{application}}","protocol":"http"}]}""");
        Assert.Equal("200", answered.Status);
        var answer = JsonNode.Parse(answered.Body)!;
        Assert.False(string.IsNullOrEmpty((string?)answer["version"]));
        var endpoint = Assert.Single(answer["endpoints"]!.AsArray())!;
        Assert.Equal(application, (string?)endpoint["application"]);
        Assert.Equal("127.0.0.1:8080", (string?)endpoint["addr"]);
    }

    /// <summary>Opens an operation, presses "Try it out" and returns the prefilled body.</summary>
    private static async Task<string> TryItOutAsync(ILocator operation)
    {
        await operation.Locator(".opblock-summary").First.ClickAsync();
        await operation.Locator("button.try-out__btn").ClickAsync();
        var body = operation.Locator("textarea.body-param__text");
        await body.WaitForAsync();
        return await body.InputValueAsync();
    }

    /// <summary>Replaces the body, presses Execute and reads the live response's status and body off the page.</summary>
    private static async Task<(string Status, string Body)> ExecuteAsync(ILocator operation, string body)
    {
        await operation.Locator("textarea.body-param__text").FillAsync(body);
        await operation.Locator("button.execute").ClickAsync();
        var live = operation.Locator(".live-responses-table .response");
        await live.First.WaitForAsync();
        var status = (await live.First.Locator(".response-col_status").InnerTextAsync()).Trim();
        var text = await live.First.Locator(".response-col_description pre.microlight").First.InnerTextAsync();
        return (status, text);
    }
}
