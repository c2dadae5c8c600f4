"""How fast are the officials' pages with a busy fund? Measured, not asserted: this prints
figures and is not a test.

Builds the test suite's Alem-like fund (``tests.factories.FundBuilder``) with a year of daily
BNB closes and NAV snapshots and ``--proposals`` proposals spread over the workflow (drafts,
waiting for risk, at the committee, approved and partly filled), then requests each page
``--requests`` times through Django's test client, signed in with a verified second factor, and
prints the median and 95th percentile server time and the number of queries. On a scratch
database ``alem_pages_bench`` (dropped and created again) on the server of DATABASE_URL.

    make bench                                                          # all three benchmarks
    .venv/bin/python embedded_db.py -- .venv/bin/python bench/pages.py --proposals 1000
"""

import argparse
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.databases import add_database_arguments, run_on_scratch_database  # noqa: E402

HISTORY_DAYS = 365


def build(count: int):
    """The fund, a year of history and ``count`` proposals; returns what the pages need."""
    import datetime as dt
    from decimal import Decimal

    from django.utils import timezone

    from governance import services
    from portfolio.prices.services import DailyClose, price_history_import
    from portfolio.services import nav_snapshot_take
    from tests.factories import FundBuilder, otp_code

    alem = FundBuilder.alem_like()
    today = timezone.localdate()
    first = today - dt.timedelta(days=HISTORY_DAYS)
    closes = [
        DailyClose(first + dt.timedelta(days=n), Decimal("550") + n % 90)
        for n in range(HISTORY_DAYS)
    ]
    price_history_import(asset=alem.asset, closes=closes)
    filled = None
    for n in range(count):
        proposal = alem.proposal(submit=n % 4 != 0, notional_usd=Decimal("10000.00"))
        if n % 4 == 2:
            alem.decide(proposal, "risk")
        if n % 4 == 3:
            proposal = alem.approve_fully(proposal)
            services.execution_record(
                proposal_id=proposal.pk,
                actor=alem.users["treasury"],
                quantity=Decimal("5"),
                price_usd=Decimal("600.00"),
                fee_usd=Decimal("0.50"),
                venue="Binance",
                external_ref=f"BENCH-{n}",
                executed_at=timezone.now(),
                otp_token=otp_code(alem.users["treasury"]),
            )
            filled = proposal
    for n in range(HISTORY_DAYS, -1, -1):
        nav_snapshot_take(fund=alem.fund, day=today - dt.timedelta(days=n))
    waiting = alem.proposal(submit=True, notional_usd=Decimal("10000.00"))
    return alem, waiting, filled


def child(count: int, requests: int) -> None:
    import json
    import statistics

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from alem.celery import app
    from governance.audit import audit_verification_run
    from tests.web import signed_in

    # The stage-opened e-mails run here and go nowhere, not to a broker or the console.
    app.conf.task_always_eager = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    call_command("migrate", verbosity=0, interactive=False)
    started = time.perf_counter()
    alem, waiting, filled = build(count)
    audit_verification_run()
    build_seconds = time.perf_counter() - started
    fund = alem.fund.pk
    pages = {
        "queue (risk officer)": ("risk", "/"),
        "queue (treasury)": ("treasury", "/"),
        "proposal with decision form": ("risk", f"/proposals/{waiting.pk}/"),
        "proposal with fills": ("treasury", f"/proposals/{filled.pk}/"),
        "portfolio": ("risk", f"/funds/{fund}/"),
        "audit log": ("auditor", "/audit/"),
    }
    clients = {}
    results = {}
    for name, (username, url) in pages.items():
        if username not in clients:
            clients[username] = signed_in(Client(HTTP_HOST="localhost"), alem.users[username])
        client = clients[username]
        assert client.get(url).status_code == 200, (name, url)  # warm the caches
        times = []
        for _ in range(requests):
            with CaptureQueriesContext(connection) as queries:
                began = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - began) * 1000)
            assert response.status_code == 200, (name, url)
        results[name] = {
            "median_ms": round(statistics.median(times), 1),
            "p95_ms": round(statistics.quantiles(times, n=20, method="inclusive")[-1], 1),
            "queries": len(queries.captured_queries),
        }
    print(json.dumps({"build_seconds": round(build_seconds, 1), "pages": results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proposals", type=int, default=200)
    parser.add_argument("--requests", type=int, default=30, help="at least 2")
    add_database_arguments(parser)
    args = parser.parse_args()
    if args.child:
        child(args.proposals, args.requests)
        return

    arguments = ["--proposals", str(args.proposals), "--requests", str(args.requests)]
    result = run_on_scratch_database(__file__, arguments, scratch_name="alem_pages_bench")
    print(
        f"Pages of a fund with {args.proposals} proposals and {HISTORY_DAYS} days of history, "
        f"{args.requests} requests each (server time through Django's test client)"
    )
    print(f"\n(building the data took {result['build_seconds']} s)")
    print(f"  {'page':<30} {'median ms':>10} {'p95 ms':>8} {'queries':>8}")
    for page, figures in result["pages"].items():
        print(
            f"  {page:<30} {figures['median_ms']:>10} {figures['p95_ms']:>8} "
            f"{figures['queries']:>8}"
        )


if __name__ == "__main__":
    main()
