"""``manage.py restore_drill DUMP``: restore a dump into a scratch database and prove it whole."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from alem.backups import BackupError, restore_drill


class Command(BaseCommand):
    help = (
        "Restore DUMP (from manage.py backup) into a new scratch database on the configured "
        "PostgreSQL server, verify the audit chain there and compare the row counts, the chain's "
        "head and each fund's cash, positions and NAV with the dump's manifest. Exit 0 when all "
        "agree, non-zero naming each difference. The scratch database is dropped unless --keep."
    )

    def add_arguments(self, parser):
        parser.add_argument("dump", type=Path, help="The .dump file written by manage.py backup.")
        parser.add_argument(
            "--manifest",
            type=Path,
            help="The dump's manifest (default: <dump name>.manifest.json beside it).",
        )
        parser.add_argument(
            "--keep", action="store_true", help="Keep the scratch database for inspection."
        )

    def handle(self, *args, dump, manifest=None, keep=False, **options):
        try:
            result = restore_drill(dump=dump, manifest_path=manifest, keep=keep)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        where = (
            f"kept as database {result.database}"
            if result.kept
            else f"scratch database {result.database} dropped"
        )
        if not result.ok:
            for difference in result.differences:
                self.stderr.write(f"  {difference}")
            raise CommandError(
                f"Restore drill failed: {len(result.differences)} difference(s) between {dump} "
                f"restored and its manifest ({where}): {'; '.join(result.differences)}"
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Restore drill passed: {dump} restored whole; audit chain intact "
                f"({result.audit_length} events); row counts, NAV and positions match the "
                f"manifest ({where})."
            )
        )
