from django.core.management.base import BaseCommand, CommandError

from governance.audit import audit_verify


class Command(BaseCommand):
    help = "Replay the audit log's hash chain: exit 0 if intact, non-zero naming the first bad row."

    def handle(self, *args, **options):
        result = audit_verify()
        if not result.ok:
            row = f"event #{result.first_bad_sequence}"
            if result.first_bad_id is not None:
                row += f" (id {result.first_bad_id})"
            raise CommandError(
                f"Audit chain broken at {row}: {result.reason}. "
                f"{result.length} events before it verify."
            )
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {result.length} events."))
