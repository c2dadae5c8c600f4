"""``manage.py import_prices FILE.csv --asset BNB``: daily closes from a Yahoo-style CSV."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from portfolio.exceptions import PriceImportError
from portfolio.models import Asset, Price
from portfolio.prices.services import parse_daily_closes, price_history_import


class Command(BaseCommand):
    help = (
        "Import daily closes from a Yahoo-style CSV (columns found by header: Date, Close) as "
        "prices of one asset. Days already stored are left as they are."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--asset", required=True, help="Asset symbol, e.g. BNB.")
        parser.add_argument(
            "--source",
            default=Price.Source.YAHOO,
            choices=[Price.Source.YAHOO, Price.Source.BINANCE, Price.Source.COINGECKO],
            help="Where the file's prices come from (default: yahoo).",
        )

    def handle(self, *args, **options):
        try:
            asset = Asset.objects.get(symbol=options["asset"].upper())
        except Asset.DoesNotExist as exc:
            raise CommandError(f"No asset {options['asset']!r}.") from exc
        try:
            closes = parse_daily_closes(options["file"])
        except PriceImportError as exc:
            raise CommandError(exc.detail) from exc
        added = price_history_import(asset=asset, closes=closes, source=options["source"])
        self.stdout.write(
            f"{asset.symbol}: {added} daily prices added, "
            f"{len(closes) - added} already stored ({len(closes)} in the file)."
        )
