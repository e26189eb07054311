using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace Registry.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class NodeProbing : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<string[]>(
                name: "probe_networks",
                table: "nodes",
                type: "text[]",
                nullable: true);

            migrationBuilder.AddColumn<float>(
                name: "probes_passing",
                table: "nodes",
                type: "real",
                nullable: true);

            migrationBuilder.AddColumn<bool>(
                name: "probes_withdrawn",
                table: "nodes",
                type: "boolean",
                nullable: false,
                defaultValue: false);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropColumn(
                name: "probe_networks",
                table: "nodes");

            migrationBuilder.DropColumn(
                name: "probes_passing",
                table: "nodes");

            migrationBuilder.DropColumn(
                name: "probes_withdrawn",
                table: "nodes");
        }
    }
}
