from django.core.management.base import BaseCommand, CommandError

from governance.export import ARCHIVES, ExportRefused, audit_export


class Command(BaseCommand):
    help = (
        "Export the whole audit chain, its signed checkpoints and the public key as a bundle "
        "directory that verifier/alem_verify.py checks without Alem (rule 11). OUT_DIR must not "
        "exist or be empty; nothing partial is left on failure."
    )

    def add_arguments(self, parser):
        parser.add_argument("out_dir", help="The bundle directory to create.")
        parser.add_argument(
            "--archive",
            choices=ARCHIVES,
            help="Also write OUT_DIR.zip or OUT_DIR.tar.gz beside the directory.",
        )

    def handle(self, *args, out_dir, archive, **options):
        try:
            manifest = audit_export(out_dir, archive=archive)
        except ExportRefused as refused:
            raise CommandError(str(refused)) from refused
        counts, head = manifest["counts"], manifest["head"]
        self.stdout.write(
            self.style.SUCCESS(
                f"Exported {counts['events']} events and {counts['checkpoints']} checkpoints to "
                f"{out_dir}; head #{head['sequence']} digest {head['digest']}."
            )
        )
