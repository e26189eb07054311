using System.Globalization;
using System.Text;

namespace Registry.Benchmarks;

/// <summary>Percentiles of a set of latencies in milliseconds (nearest-rank).</summary>
public sealed record Distribution(int Count, double P50, double P90, double P99, double Max, double Mean)
{
    public static Distribution Of(IReadOnlyCollection<double> milliseconds)
    {
        ArgumentNullException.ThrowIfNull(milliseconds);
        if (milliseconds.Count == 0)
        {
            return new Distribution(0, 0, 0, 0, 0, 0);
        }

        var sorted = milliseconds.Order().ToArray();
        double At(double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];
        return new Distribution(sorted.Length, Round(At(0.50)), Round(At(0.90)), Round(At(0.99)), Round(sorted[^1]), Round(sorted.Average()));
    }

    public static double Round(double value) => Math.Round(value, 2);
}

/// <summary>A text histogram, for a Markdown code block.</summary>
public static class Histogram
{
    private static readonly double[] Edges = [0, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000, 5000];

    public static string Render(IReadOnlyCollection<double> milliseconds, int width = 50)
    {
        ArgumentNullException.ThrowIfNull(milliseconds);
        var counts = new int[Edges.Length];
        foreach (var value in milliseconds)
        {
            var bucket = Array.FindLastIndex(Edges, edge => value >= edge);
            counts[Math.Max(bucket, 0)]++;
        }

        var last = Array.FindLastIndex(counts, c => c > 0);
        var most = Math.Max(1, counts.Max());
        var text = new StringBuilder();
        for (var i = 0; i <= last; i++)
        {
            var label = i + 1 < Edges.Length
                ? string.Create(CultureInfo.InvariantCulture, $"{Edges[i],5:0}–{Edges[i + 1],-5:0} ms")
                : string.Create(CultureInfo.InvariantCulture, $"{Edges[i],5:0}+       ms");
            var bar = new string('█', (int)Math.Ceiling(counts[i] * (double)width / most));
            text.Append(CultureInfo.InvariantCulture, $"{label} │{bar,-50} {counts[i],6} ({100.0 * counts[i] / milliseconds.Count,5:0.0}%)\n");
        }

        return text.ToString();
    }
}
