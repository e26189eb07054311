using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Registry.Postgres;

/// <summary>
/// The local PostgreSQL server binaries (Debian's <c>postgresql</c> package) and how to run
/// them: PostgreSQL refuses to run as root, so under root they run as the <c>postgres</c> user,
/// which then owns the folders they use. Shared by <see cref="LocalPostgres"/> and the tests'
/// own servers (replicas, restarts).
/// </summary>
public sealed class PostgresBinaries
{
    private PostgresBinaries(string directory)
    {
        Directory = directory;
    }

    /// <summary>The folder holding initdb, pg_ctl and the rest.</summary>
    public string Directory { get; }

    /// <summary>Whether the binaries run as the <c>postgres</c> user (this process is root).</summary>
    public static bool AsPostgresUser => Environment.UserName == "root";

    /// <summary>
    /// The configured folder, else <c>/usr/lib/postgresql/*/bin</c> of <paramref name="major"/> (the version a
    /// cluster was made by: a newer server refuses its folder) or else the newest, else the first
    /// folder on PATH that holds initdb and pg_ctl.
    /// </summary>
    public static PostgresBinaries Find(string? configured = null, int? major = null)
    {
        static bool HasServer(string folder) =>
            File.Exists(Path.Combine(folder, "initdb")) && File.Exists(Path.Combine(folder, "pg_ctl"));

        if (!string.IsNullOrEmpty(configured))
        {
            return HasServer(configured)
                ? new PostgresBinaries(configured)
                : throw new LocalPostgresException($"Registry:Database:LocalBinDirectory ({configured}) holds no initdb and pg_ctl.");
        }

        var candidates = System.IO.Directory.Exists("/usr/lib/postgresql")
            ? System.IO.Directory.GetDirectories("/usr/lib/postgresql")
                .Select(v => Path.Combine(v, "bin"))
                .Select(v => (Folder: v, Major: int.TryParse(Path.GetFileName(Path.GetDirectoryName(v)), out var version) ? version : 0))
                .OrderByDescending(v => v.Major == major)
                .ThenByDescending(v => v.Major)
                .Select(v => v.Folder)
            : Enumerable.Empty<string>();
        var path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries);
        return candidates.Concat(path).FirstOrDefault(HasServer) is { } found
            ? new PostgresBinaries(found)
            : throw new LocalPostgresException(
                "No database is configured and no PostgreSQL server is installed: install the 'postgresql' package " +
                "(sudo apt-get install postgresql) or set ConnectionStrings__Registry to a PostgreSQL database.");
    }

    /// <summary>A free TCP port on the loopback interface.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>
    /// Gives <paramref name="folder"/> (and, <paramref name="recursive"/>, what it holds) to the user the binaries run as
    /// (mode 0700), when that is not this process's user.
    /// </summary>
    public static async Task HandOverAsync(string folder, CancellationToken cancellationToken, bool recursive = true)
    {
        if (AsPostgresUser)
        {
            await RunProcessAsync("chown", [.. recursive ? ["-R"] : Array.Empty<string>(), "postgres:postgres", folder], cancellationToken);
            await RunProcessAsync("chmod", ["0700", folder], cancellationToken);
        }
    }

    /// <summary>Runs one of the binaries (as <c>postgres</c> under root); a non-zero exit throws with what it said.</summary>
    public Task RunAsync(string program, IReadOnlyList<string> arguments, CancellationToken cancellationToken) =>
        AsPostgresUser
            ? RunProcessAsync("runuser", ["-u", "postgres", "--", Path.Combine(Directory, program), .. arguments], cancellationToken)
            : RunProcessAsync(Path.Combine(Directory, program), arguments, cancellationToken);

    /// <summary>Runs a program to its end; a non-zero exit throws with what it said.</summary>
    private static async Task RunProcessAsync(string program, IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = new Process { StartInfo = start };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new LocalPostgresException($"Cannot run {program}: {e.Message}.", e);
        }

        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var error = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        if (process.ExitCode != 0)
        {
            var said = (await error + await output).Trim();
            throw new LocalPostgresException($"{Path.GetFileName(program)} {string.Join(' ', arguments)} failed ({process.ExitCode}): {said}");
        }
    }
}
