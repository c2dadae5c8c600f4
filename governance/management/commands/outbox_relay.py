"""``manage.py outbox_relay``: send the tasks waiting in the outbox now (``governance.outbox``).

The schedule does this every minute through the worker; this command does it from a shell or a
cron job when beat or the worker is down. It still needs the broker: rows it cannot send stay
waiting, and the command exits non-zero.
"""

from django.core.management.base import BaseCommand, CommandError

from governance import outbox


class Command(BaseCommand):
    help = (
        "Send the Celery tasks waiting in the outbox (queued while the broker was down), oldest "
        "first, and prune rows sent more than a week ago. Needs the broker."
    )

    def handle(self, *args, **options):
        report = outbox.outbox_relay()
        waiting = outbox.outbox_waiting()
        summary = (
            f"Outbox: {report.sent} task(s) sent, {report.failed} not sent, "
            f"{report.pruned} old row(s) pruned; {waiting} waiting."
        )
        if report.failed:
            raise CommandError(summary + " See the log for the broker's error.")
        self.stdout.write(self.style.SUCCESS(summary))
