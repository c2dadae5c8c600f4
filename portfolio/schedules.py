"""Periodic tasks: each app declares its own in code (``portfolio.schedules.SCHEDULES``, and
``governance.schedules.SCHEDULES``, which adds governance's to these), and
``manage.py install_schedules`` puts them into django-celery-beat's tables, where administrators
can change intervals or switch them off (Django admin, "Periodic tasks").

A schedule runs ``every`` some interval, or once a day ``daily_at`` a time of day in
``TIME_ZONE`` (Asia/Almaty), as a crontab schedule. Tasks are named, not imported.

``install_schedules`` adds the missing ones and leaves existing ones as the administrators set
them (``--reset`` puts them back to their declared values).
"""

import datetime as dt
import json
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from portfolio.models import MarketDataProvider


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every: dt.timedelta | None
    args: tuple = ()
    description: str = ""
    daily_at: dt.time | None = None  # instead of ``every``: once a day at this local time

    def __post_init__(self):
        if (self.every is None) == (self.daily_at is None):
            raise ValueError(f"Schedule {self.name!r} needs exactly one of every and daily_at.")


# The latest-price fetch of each provider: (schedule name, interval, what it fetches).
_PRICE_FETCHES = {
    MarketDataProvider.BINANCE: (
        "Fetch prices from Binance",
        dt.timedelta(minutes=1),
        "Latest prices of every asset with a Binance symbol, in one request.",
    ),
    MarketDataProvider.COINGECKO: (
        "Fetch prices from CoinGecko",
        dt.timedelta(minutes=2),
        "Latest prices of every asset with a CoinGecko id, in one request "
        "(every two minutes: the public API allows few calls).",
    ),
    MarketDataProvider.NBK: (
        "Fetch the official USD/KZT rate",
        dt.timedelta(hours=1),
        "Today's National Bank of Kazakhstan rate, and the prices of tenge-pegged assets.",
    ),
}

SCHEDULES = (
    *(
        Schedule(name, "portfolio.tasks.prices_fetch", every, (provider.value,), description)
        for provider, (name, every, description) in _PRICE_FETCHES.items()
    ),
    Schedule(
        "Take NAV snapshots",
        "portfolio.tasks.nav_snapshots_take",
        dt.timedelta(hours=1),
        (),
        "Every fund's NAV today (updated through the day) and, after midnight Almaty time, the "
        "final NAV of the day before.",
    ),
    Schedule(
        "Refresh the public disclosures",
        "portfolio.tasks.public_disclosures_refresh",
        dt.timedelta(minutes=15),
        (),
        "Rebuild what each disclosing fund's public pages show, up to its disclosure delay.",
    ),
    Schedule(
        "Reconcile custody accounts on chain",
        "portfolio.tasks.reconciliation_run",
        dt.timedelta(hours=1),
        (),
        "Read the balance of every custody address (EVM chains, Bitcoin) and compare it with the "
        "ledger; a difference beyond dust opens a break for the auditors.",
    ),
)


def _crontab(at: dt.time) -> CrontabSchedule:
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute=str(at.minute),
        hour=str(at.hour),
        day_of_week="*",
        day_of_month="*",
        month_of_year="*",
        timezone=settings.TIME_ZONE,
    )
    return crontab


def _interval(every: dt.timedelta) -> IntervalSchedule:
    seconds = int(every.total_seconds())
    interval = IntervalSchedule.objects.filter(
        every=seconds, period=IntervalSchedule.SECONDS
    ).first()
    return interval or IntervalSchedule.objects.create(
        every=seconds, period=IntervalSchedule.SECONDS
    )


@transaction.atomic
def schedules_install(
    *, schedules: tuple[Schedule, ...], reset: bool = False
) -> list[tuple[str, str]]:
    """Create the periodic tasks that do not exist yet; with ``reset``, also put existing ones
    back to their declared task, arguments, interval or time of day and enabled state. Returns
    ``(name, "created" | "reset" | "kept")`` per schedule."""
    results = []
    for schedule in schedules:
        values = {
            "task": schedule.task,
            "args": json.dumps(list(schedule.args)),
            "interval": _interval(schedule.every) if schedule.every else None,
            "crontab": _crontab(schedule.daily_at) if schedule.daily_at else None,
            "solar": None,
            "clocked": None,
            "enabled": True,
            "description": schedule.description,
        }
        task = PeriodicTask.objects.select_for_update().filter(name=schedule.name).first()
        if task is None:
            PeriodicTask.objects.create(name=schedule.name, **values)
            results.append((schedule.name, "created"))
        elif reset:
            for name, value in values.items():
                setattr(task, name, value)
            task.save(update_fields=list(values))
            results.append((schedule.name, "reset"))
        else:
            results.append((schedule.name, "kept"))
    return results
