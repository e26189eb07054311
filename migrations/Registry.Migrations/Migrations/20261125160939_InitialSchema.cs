using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace Registry.Migrations.Migrations
{
    /// <inheritdoc />
    public partial class InitialSchema : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.CreateSequence(
                name: "instance_revision");

            migrationBuilder.CreateTable(
                name: "instances",
                columns: table => new
                {
                    application = table.Column<string>(type: "text", nullable: false, collation: "C"),
                    protocol = table.Column<string>(type: "text", nullable: false, collation: "C"),
                    addr = table.Column<string>(type: "text", nullable: false, collation: "C"),
                    meta = table.Column<string>(type: "jsonb", nullable: false),
                    ttl_seconds = table.Column<int>(type: "integer", nullable: false),
                    expires_at = table.Column<DateTime>(type: "timestamptz", nullable: false),
                    registered_at = table.Column<DateTime>(type: "timestamptz", nullable: false),
                    revision = table.Column<long>(type: "bigint", nullable: false, defaultValueSql: "nextval('instance_revision')")
                },
                constraints: table =>
                {
                    table.PrimaryKey("PK_instances", x => new { x.application, x.protocol, x.addr });
                })
                .Annotation("Npgsql:StorageParameter:fillfactor", 70);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "instances");

            migrationBuilder.DropSequence(
                name: "instance_revision");
        }
    }
}
