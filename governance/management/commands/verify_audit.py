from django.core.management.base import BaseCommand, CommandError

from governance.audit import audit_verify


class Command(BaseCommand):
    help = (
        "Replay the audit log's keyed hash chain and compare the records it vouches for (ledger, "
        "policies, stages, decisions, executions, fund roles): exit 0 if all agree, non-zero "
        "naming the first bad row or every record that differs."
    )

    def handle(self, *args, **options):
        result = audit_verify()
        if result.problems:
            for problem in result.problems:
                self.stderr.write(f"  {problem}")
            raise CommandError(
                f"The audit chain is intact ({result.length} events), but "
                f"{len(result.problems)} record(s) differ from it: {result.problems[0]}."
            )
        if not result.ok:
            row = f"event #{result.first_bad_sequence}"
            if result.first_bad_id is not None:
                row += f" (id {result.first_bad_id})"
            raise CommandError(
                f"Audit chain broken at {row}: {result.reason}. "
                f"{result.length} events before it verify."
            )
        self.stdout.write(self.style.SUCCESS(f"Audit chain intact: {result.length} events."))
