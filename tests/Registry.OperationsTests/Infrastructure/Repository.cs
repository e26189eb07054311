namespace Registry.OperationsTests.Infrastructure;

/// <summary>Files of the repository the tests check against (README.md, openapi/).</summary>
public static class Repository
{
    /// <summary>The folder holding Registry.sln, found upwards from the test binaries.</summary>
    public static string Root { get; } = FindRoot();

    public static string PathOf(params string[] parts) => Path.Combine([Root, .. parts]);

    private static string FindRoot()
    {
        for (var folder = new DirectoryInfo(AppContext.BaseDirectory); folder is not null; folder = folder.Parent)
        {
            if (File.Exists(Path.Combine(folder.FullName, "Registry.sln")))
            {
                return folder.FullName;
            }
        }

        throw new InvalidOperationException($"No Registry.sln above {AppContext.BaseDirectory}.");
    }
}
