"""How long does a backfill of 5 years of daily prices for 20 assets take? Measured, not
asserted: this prints figures and is not a test.

Runs ``portfolio.prices.services.prices_backfill`` for Binance (klines), CoinGecko (market
charts) and the National Bank (one request per day) against the fake market server of the test
suite, on a scratch database of the server of DATABASE_URL, then runs it again to time the
idempotent re-run.

    make bench                                                          # all three benchmarks
    .venv/bin/python embedded_db.py -- .venv/bin/python bench/backfill.py --days 365 --assets 5

The fake market runs in this process; each database is measured in a child process of its
own (Django is configured once per process), so the server and the client do not share a
Python interpreter. PostgreSQL: a scratch database ``alem_prices_bench`` (dropped and created
again) on ``--postgres-url``'s server.
"""

import argparse
import json
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.databases import add_database_arguments, run_on_scratch_database  # noqa: E402

PROVIDERS = ("binance", "coingecko", "nbk")


def asset_ids(count: int) -> list[tuple[str, str, str]]:
    """(symbol, Binance pair, CoinGecko id) of the benchmark's assets."""
    return [(f"BENCH{n:02d}", f"BENCH{n:02d}USDT", f"bench-coin-{n:02d}") for n in range(count)]


# ---------------------------------------------------------------------------------------------
# Child: one database
# ---------------------------------------------------------------------------------------------


def child(days: int, count: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from portfolio.models import Asset, FxRate, Price
    from portfolio.prices.services import prices_backfill

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    migrate_seconds = time.perf_counter() - started
    for symbol, pair, coin in asset_ids(count):
        Asset.objects.create(symbol=symbol, name=symbol, binance_symbol=pair, coingecko_id=coin)
    Asset.objects.create(symbol="KZTE", name="Tenge stablecoin", peg_currency="KZT")

    runs = []
    for attempt in ("first", "again"):
        for provider in PROVIDERS:
            started = time.perf_counter()
            report = prices_backfill(provider=provider, days=days)
            seconds = time.perf_counter() - started
            runs.append(
                {
                    "run": attempt,
                    "provider": provider,
                    "outcome": report.outcome,
                    "requests": report.requests,
                    "stored": report.stored,
                    "seconds": round(seconds, 2),
                }
            )
    print(
        json.dumps(
            {
                "vendor": connection.vendor,
                "migrate_seconds": round(migrate_seconds, 2),
                "runs": runs,
                "prices": Price.objects.count(),
                "rates": FxRate.objects.count(),
            }
        )
    )


# ---------------------------------------------------------------------------------------------
# Parent: the fake market and one child per database
# ---------------------------------------------------------------------------------------------


def print_table(title: str, result: dict, days: int, count: int) -> None:
    print(f"\n{title}: {count} assets x {days} days (migrate {result['migrate_seconds']} s)")
    print(f"  {'run':<6} {'provider':<10} {'outcome':<8} {'requests':>8} {'stored':>8} "
          f"{'seconds':>8} {'rows/s':>8}")  # fmt: skip
    for run in result["runs"]:
        rate = run["stored"] / run["seconds"] if run["seconds"] else 0
        print(
            f"  {run['run']:<6} {run['provider']:<10} {run['outcome']:<8} {run['requests']:>8} "
            f"{run['stored']:>8} {run['seconds']:>8.2f} {rate:>8.0f}"
        )
    first = [r for r in result["runs"] if r["run"] == "first"]
    total = sum(r["seconds"] for r in first)
    print(
        f"  total first run: {total:.2f} s for {sum(r['stored'] for r in first)} rows "
        f"({result['prices']} prices, {result['rates']} USD/KZT rates in the database)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5 * 365 + 1)
    parser.add_argument("--assets", type=int, default=20)
    add_database_arguments(parser)
    args = parser.parse_args()
    if args.child:
        child(args.days, args.assets)
        return

    from tests.portfolio.fake_market import FakeMarket

    with FakeMarket() as market:
        for _, pair, coin in asset_ids(args.assets):
            market.binance_history.add(pair)
            market.coingecko_history.add(coin)
        market.nbk_default = {"USD": ("470.25", "1"), "EUR": ("510.40", "1")}

        result = run_on_scratch_database(
            __file__,
            ["--days", str(args.days), "--assets", str(args.assets)],
            scratch_name="alem_prices_bench",
            ALEM_PRICE_TIMEOUT_SECONDS="60",
            **market.urls,
        )
        print(f"fake market: {len(market.requests)} requests answered on 127.0.0.1")
    print_table("PostgreSQL", result, args.days, args.assets)


if __name__ == "__main__":
    main()
