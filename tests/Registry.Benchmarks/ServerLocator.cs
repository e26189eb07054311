namespace Registry.Benchmarks;

/// <summary>Finds the built server: the nodes run as their own processes, as in production.</summary>
internal static class ServerLocator
{
    private const string Dll = "Registry.Server.dll";

    public static string Find(string? configured)
    {
        if (!string.IsNullOrEmpty(configured))
        {
            return File.Exists(configured) ? Path.GetFullPath(configured) : throw new FileNotFoundException($"--server-dll {configured} does not exist.");
        }

        // Prefer the server built in the same configuration as this tool (bin/<Configuration>/<tfm>/).
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = here.Name;
        var configuration = here.Parent?.Name ?? "Release";
        for (var folder = here; folder is not null; folder = folder.Parent)
        {
            if (!File.Exists(Path.Combine(folder.FullName, "Registry.sln")))
            {
                continue;
            }

            var candidates = new[] { configuration, "Release", "Debug" }
                .Select(c => Path.Combine(folder.FullName, "src", "Registry.Server", "bin", c, framework, Dll))
                .Where(File.Exists)
                .ToArray();
            if (candidates.Length > 0)
            {
                return candidates[0];
            }
        }

        throw new FileNotFoundException($"Cannot find {Dll}: build src/Registry.Server or pass --server-dll.");
    }
}
