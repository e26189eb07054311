using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Design;
using Registry.Storage;

namespace Registry.Migrations;

/// <summary>Lets <c>dotnet ef migrations add</c> build the model without a database or a host.</summary>
internal sealed class DesignTimeFactory : IDesignTimeDbContextFactory<RegistryDbContext>
{
    public RegistryDbContext CreateDbContext(string[] args) =>
        new(new DbContextOptionsBuilder<RegistryDbContext>()
            .UseNpgsql("Host=localhost", npgsql => npgsql.MigrationsAssembly(typeof(DesignTimeFactory).Assembly.GetName().Name))
            .Options);
}
