"""How long does a backfill of 5 years of daily prices for 20 assets take? Measured, not
asserted: this prints figures and is not a test.

Runs ``portfolio.prices.services.prices_backfill`` for Binance (klines), CoinGecko (market
charts) and the National Bank (one request per day) against the fake market server of the test
suite, on a scratch database of the server of DATABASE_URL, then runs it again to time the
idempotent re-run.

The yardstick is a raw COPY of the same rows: every price and rate stored, copied out as text
and copied again into empty tables of the same shape (columns, indexes, checks and the asset
foreign key) in one transaction, the best of three. "of raw" is the backfill's rows per second
over the raw COPY's; "store s" is the time spent in ``prices_store`` and ``_store_fx_rates``
(the rest is HTTP, parsing and the fetch bookkeeping).

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


def timed(function, clock: list[float]):
    """``function``, adding the seconds each call takes to ``clock[0]``."""

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            clock[0] += time.perf_counter() - started

    return wrapper


def raw_copy_seconds(attempts: int = 3) -> tuple[int, float]:
    """The yardstick: (rows, seconds) of a raw COPY of every stored price and rate into empty
    tables shaped like theirs, committed; the best of ``attempts``. The rows are copied out
    first, so only the COPY in and the commit are timed."""
    from django.db import connection, transaction

    tables = {
        "portfolio_price": "asset_id, source, quote_currency, price, observed_at, fetched_at, "
        "entered_by_id",
        "portfolio_fxrate": "base_currency, quote_currency, rate, date, source",
    }
    data = {}
    with connection.cursor() as cursor:
        for table, columns in tables.items():
            with cursor.cursor.copy(f"COPY {table} ({columns}) TO STDOUT") as copy:
                data[table] = b"".join(bytes(block) for block in copy)
            cursor.execute(f"DROP TABLE IF EXISTS bench_{table}")
            cursor.execute(f"CREATE TABLE bench_{table} (LIKE {table} INCLUDING ALL)")
        cursor.execute(
            "ALTER TABLE bench_portfolio_price ADD FOREIGN KEY (asset_id) "
            "REFERENCES portfolio_asset (id) DEFERRABLE INITIALLY DEFERRED"
        )
    rows = sum(block.count(b"\n") for block in data.values())
    best = None
    for _ in range(attempts):
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(f'bench_{table}' for table in tables)}")
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            for table, columns in tables.items():
                with cursor.cursor.copy(f"COPY bench_{table} ({columns}) FROM STDIN") as copy:
                    copy.write(data[table])
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"DROP TABLE bench_{table}")
    return rows, best


def child(days: int, count: int) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from portfolio.models import Asset, FxRate, Price
    from portfolio.prices import services
    from portfolio.prices.services import prices_backfill

    store_clock = [0.0]
    services.prices_store = timed(services.prices_store, store_clock)
    services._store_fx_rates = timed(services._store_fx_rates, store_clock)

    started = time.perf_counter()
    call_command("migrate", verbosity=0, interactive=False)
    migrate_seconds = time.perf_counter() - started
    for symbol, pair, coin in asset_ids(count):
        Asset.objects.create(symbol=symbol, name=symbol, binance_symbol=pair, coingecko_id=coin)
    Asset.objects.create(symbol="KZTE", name="Tenge stablecoin", peg_currency="KZT")

    runs = []
    for attempt in ("first", "again"):
        for provider in PROVIDERS:
            store_clock[0] = 0.0
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
                    "store_seconds": round(store_clock[0], 2),
                }
            )
    raw_rows, raw_seconds = raw_copy_seconds()
    print(
        json.dumps(
            {
                "vendor": connection.vendor,
                "migrate_seconds": round(migrate_seconds, 2),
                "runs": runs,
                "prices": Price.objects.count(),
                "rates": FxRate.objects.count(),
                "raw_copy": {"rows": raw_rows, "seconds": round(raw_seconds, 3)},
            }
        )
    )


# ---------------------------------------------------------------------------------------------
# Parent: the fake market and one child per database
# ---------------------------------------------------------------------------------------------


def print_table(title: str, result: dict, days: int, count: int) -> None:
    print(f"\n{title}: {count} assets x {days} days (migrate {result['migrate_seconds']} s)")
    raw = result.get("raw_copy")
    raw_rate = raw["rows"] / raw["seconds"] if raw and raw["seconds"] else 0
    print(f"  {'run':<6} {'provider':<10} {'outcome':<8} {'requests':>8} {'stored':>8} "
          f"{'seconds':>8} {'store s':>8} {'rows/s':>8} {'of raw':>7}")  # fmt: skip
    for run in result["runs"]:
        rate = run["stored"] / run["seconds"] if run["seconds"] else 0
        print(
            f"  {run['run']:<6} {run['provider']:<10} {run['outcome']:<8} {run['requests']:>8} "
            f"{run['stored']:>8} {run['seconds']:>8.2f} {run.get('store_seconds', 0):>8.2f} "
            f"{rate:>8.0f} {rate / raw_rate if raw_rate else 0:>7.3f}"
        )
    first = [r for r in result["runs"] if r["run"] == "first"]
    total = sum(r["seconds"] for r in first)
    stored = sum(r["stored"] for r in first)
    print(
        f"  total first run: {total:.2f} s for {stored} rows "
        f"({result['prices']} prices, {result['rates']} USD/KZT rates in the database)"
    )
    if raw_rate and total:
        store = sum(r.get("store_seconds", 0) for r in first)
        print(
            f"  raw COPY of the same rows: {raw['seconds']:.3f} s for {raw['rows']} rows "
            f"({raw_rate:.0f} rows/s)\n"
            f"  backfill at {stored / total / raw_rate:.3f} of raw COPY; its storing alone "
            f"({store:.2f} s) at {stored / store / raw_rate if store else 0:.3f}"
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
