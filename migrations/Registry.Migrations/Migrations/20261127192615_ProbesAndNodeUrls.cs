using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace Registry.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class ProbesAndNodeUrls : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<DateTime>(
                name: "left_at",
                table: "nodes",
                type: "timestamptz",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "url",
                table: "nodes",
                type: "text",
                nullable: true);

            migrationBuilder.AddColumn<int>(
                name: "probe_interval_seconds",
                table: "instances",
                type: "integer",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "probe_kind",
                table: "instances",
                type: "text",
                nullable: true);

            migrationBuilder.AddColumn<string>(
                name: "probe_path",
                table: "instances",
                type: "text",
                nullable: true);

            migrationBuilder.CreateIndex(
                name: "IX_instances_probe_kind",
                table: "instances",
                column: "probe_kind",
                filter: "probe_kind IS NOT NULL");
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropIndex(
                name: "IX_instances_probe_kind",
                table: "instances");

            migrationBuilder.DropColumn(
                name: "left_at",
                table: "nodes");

            migrationBuilder.DropColumn(
                name: "url",
                table: "nodes");

            migrationBuilder.DropColumn(
                name: "probe_interval_seconds",
                table: "instances");

            migrationBuilder.DropColumn(
                name: "probe_kind",
                table: "instances");

            migrationBuilder.DropColumn(
                name: "probe_path",
                table: "instances");
        }
    }
}
