"""``manage.py fetch_prices``: one fetch of the latest prices now, synchronously."""

from django.core.management.base import BaseCommand, CommandError

from portfolio.models import MarketDataProvider, PriceFetch
from portfolio.prices import services as price_services


class Command(BaseCommand):
    help = (
        "Fetch the latest prices from each provider now (not through Celery) and print what "
        "each returned or why it failed. Fails when no provider answered."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--provider",
            action="append",
            choices=MarketDataProvider.values,
            help="Only this provider (repeatable). Default: all.",
        )

    def handle(self, *args, **options):
        reports = price_services.prices_fetch_all(providers=options["provider"])
        for report in reports:
            self.stdout.write(describe(report))
        answered = {PriceFetch.Outcome.OK, PriceFetch.Outcome.PARTIAL}
        if not any(report.outcome in answered for report in reports):
            raise CommandError("No provider answered.")


def describe(report: price_services.FetchReport) -> str:
    """A few lines on one fetch: outcome, prices returned, failures with their reasons."""
    plural = "" if report.requests == 1 else "s"
    lines = [
        f"{report.provider}: {report.outcome}, {report.stored} stored "
        f"({report.requests} request{plural})"
    ]
    if report.detail:
        lines.append(f"  {report.detail}")
    for symbol, price, quote in report.prices:
        lines.append(f"  {symbol:<8} {price} {quote}")
    for failure in report.failures:
        about = f"{failure.asset.symbol}: " if failure.asset else ""
        status = f" [HTTP {failure.http_status}]" if failure.http_status else ""
        lines.append(f"  failed {about}{failure.reason}{status}: {failure.detail}")
    if report.paused_until:
        lines.append(f"  paused until {report.paused_until.isoformat()}")
    return "\n".join(lines)
