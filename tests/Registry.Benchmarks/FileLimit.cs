using System.Runtime.InteropServices;

namespace Registry.Benchmarks;

/// <summary>
/// Raises a process's open-file limit (RLIMIT_NOFILE) through prlimit(2): parked polls are one
/// socket each on both sides, and 50,000 of them need more than the usual 1,024 or 20,000.
/// Raising the hard limit needs CAP_SYS_RESOURCE (root); otherwise the soft limit goes up to the hard one.
/// </summary>
internal static partial class FileLimit
{
    private const int NoFile = 7; // RLIMIT_NOFILE on Linux

    /// <summary>Raises <paramref name="pid"/>'s limit (0: this process) to at least <paramref name="wanted"/> where it may; returns the soft limit it has now.</summary>
    public static ulong Raise(int pid, ulong wanted)
    {
        if (!OperatingSystem.IsLinux())
        {
            return 0;
        }

        if (prlimit(pid, NoFile, IntPtr.Zero, out var current) != 0)
        {
            return 0;
        }

        if (current.Current >= wanted)
        {
            return current.Current;
        }

        var raised = new Limit { Current = wanted, Maximum = Math.Max(wanted, current.Maximum) };
        if (prlimit(pid, NoFile, ref raised, IntPtr.Zero) != 0)
        {
            // Not allowed above the hard limit: take what the hard limit gives.
            raised = new Limit { Current = current.Maximum, Maximum = current.Maximum };
            _ = prlimit(pid, NoFile, ref raised, IntPtr.Zero);
        }

        return prlimit(pid, NoFile, IntPtr.Zero, out var now) == 0 ? now.Current : 0;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Limit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport("libc", SetLastError = true)]
    private static partial int prlimit(int pid, int resource, IntPtr newLimit, out Limit oldLimit);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int prlimit(int pid, int resource, ref Limit newLimit, IntPtr oldLimit);
}
