"""``manage.py backup``: a PostgreSQL dump (custom format) and its manifest, from one snapshot."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from alem.backups import BackupError, backup_take


class Command(BaseCommand):
    help = (
        "Dump the PostgreSQL database with pg_dump --format=custom (default "
        "var/backups/alem-<UTC timestamp>.dump) and write beside it a manifest of the row "
        "counts, the audit chain's head and each fund's books, read from the same snapshot. "
        "restore_drill proves a dump whole against its manifest."
    )

    def add_arguments(self, parser):
        parser.add_argument("--output", type=Path, help="Where to write the dump.")

    def handle(self, *args, output=None, **options):
        try:
            backup = backup_take(output=output)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Backup written: {backup.dump} ({backup.size:,} bytes), snapshot at "
                f"{backup.snapshot_at.isoformat()}; manifest {backup.manifest}."
            )
        )
