"""``manage.py backfill_prices --days N``: daily history from every provider, idempotent."""

import time
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError

from portfolio.management.commands.fetch_prices import describe
from portfolio.models import MarketDataProvider, PriceFetch
from portfolio.prices import services as price_services


class ProgressBar:
    """The ``progress`` of a backfill. On a terminal one line redrawn in place::

        binance [###############...............] 20/40 BTCUSDT   18,260 stored, 9,512 rows/s

    On anything else (a log, a pipe) one plain line per tenth of the way, with the same
    figures. The rate is of rows stored since the bar was made."""

    width = 30

    def __init__(self, stream, label: str, *, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.label = label
        self.tty = stream.isatty()
        self.last_tenth = -1
        self.clock = clock
        self.started = clock()

    def __call__(self, done: int, total: int, item: str, stored: int) -> None:
        elapsed = self.clock() - self.started
        figures = f"{stored:,} stored, {stored / elapsed if elapsed > 0 else 0:,.0f} rows/s"
        if self.tty:
            filled = self.width * done // max(total, 1)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {done}/{total} {item:<16} {figures:<36}", ending=""
            )
            self.stream.flush()
            return
        tenth = 10 * done // max(total, 1)
        if tenth != self.last_tenth:
            self.last_tenth = tenth
            self.stream.write(f"{self.label}: {done}/{total} ({10 * tenth}%) {item}, {figures}")

    def close(self) -> None:
        if self.tty:
            self.stream.write("")


class Command(BaseCommand):
    help = (
        "Store the daily price history of the last N days: Binance klines, CoinGecko market "
        "charts and the National Bank's USD/KZT rates. Days already stored are skipped."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, required=True, help="How many days back.")
        parser.add_argument(
            "--provider",
            action="append",
            choices=MarketDataProvider.values,
            help="Only this provider (repeatable). Default: all.",
        )
        parser.add_argument("--asset", action="append", help="Only this asset symbol (repeatable).")

    def handle(self, *args, **options):
        if options["days"] < 1:
            raise CommandError("--days must be at least 1.")
        failed = []
        for provider in options["provider"] or MarketDataProvider.values:
            bar = ProgressBar(self.stdout, provider)
            try:
                report = price_services.prices_backfill(
                    provider=provider,
                    days=options["days"],
                    symbols=options["asset"],
                    progress=bar,
                )
            finally:
                bar.close()
            self.stdout.write(describe(report))
            if report.outcome not in (PriceFetch.Outcome.OK, PriceFetch.Outcome.PARTIAL):
                failed.append(provider)
        if failed:
            raise CommandError(f"Backfill incomplete: {', '.join(failed)} stored nothing.")
