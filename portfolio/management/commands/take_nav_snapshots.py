"""``manage.py take_nav_snapshots``: store each fund's end-of-day NAV for a range of days."""

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from portfolio.models import Fund
from portfolio.services import nav_snapshot_take


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not a date (YYYY-MM-DD).") from exc


class Command(BaseCommand):
    help = "Take (or retake) NAV snapshots of every fund, or one, for each day in a range."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="start", help="First day (default: today).")
        parser.add_argument("--to", dest="end", help="Last day (default: today).")
        parser.add_argument("--fund", help="A fund's slug (default: every fund).")

    def handle(self, *args, start=None, end=None, fund=None, **options):
        today = timezone.localdate()
        first, last = _date(start) if start else today, _date(end) if end else today
        if first > last:
            raise CommandError("--from must not be after --to.")
        if last > today:
            raise CommandError("Cannot value a day that has not begun.")
        funds = Fund.objects.all()
        if fund:
            funds = funds.filter(slug=fund)
            if not funds.exists():
                raise CommandError(f"No fund with slug {fund!r}.")
        count = 0
        for each in funds:
            day = first
            while day <= last:
                nav_snapshot_take(fund=each, day=day)
                day += dt.timedelta(days=1)
                count += 1
        self.stdout.write(self.style.SUCCESS(f"{count} NAV snapshot(s) taken."))
