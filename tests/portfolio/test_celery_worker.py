"""End to end: a real ``celery -A alem worker --beat`` process runs the scheduled fetches
against the fake market, and the prices land in the database. Once on Redis, once on the
filesystem broker.

The worker is another process, so it cannot see pytest's test database (inside a rolled-back
transaction). Each test therefore gets a database of its own beside the test database that
both processes open (``tests.scratch_databases``), migrated once per module by
``manage.py migrate`` and copied per test.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.conf import settings

from tests import scratch_databases
from tests.portfolio.fake_market import FakeMarket

BASE_DIR = Path(settings.BASE_DIR)
CELERY = Path(sys.executable).with_name("celery")
REDIS_E2E_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/5"
WAIT_SECONDS = 90

SEED = """
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from portfolio.models import Asset
from governance.schedules import schedules_install

Asset.objects.create(symbol="BNB", name="BNB", binance_symbol="BNBUSDT", coingecko_id="binancecoin")
Asset.objects.create(symbol="KZTE", name="Tenge stablecoin", peg_currency="KZT")
schedules_install()
# The declared intervals are minutes; a test cannot wait that long.
every_two_seconds = IntervalSchedule.objects.create(every=2, period=IntervalSchedule.SECONDS)
for task in PeriodicTask.objects.filter(task="portfolio.tasks.prices_fetch"):
    task.interval = every_two_seconds
    task.save()
"""

REPORT = """
import json
from portfolio.models import FxRate, Price, PriceFetch
print(json.dumps({
    "prices": sorted({(p.asset.symbol, p.source, p.quote_currency, str(p.price))
                      for p in Price.objects.select_related("asset")}),
    "rates": sorted({str(r.rate) for r in FxRate.objects.all()}),
    "outcomes": sorted(set(PriceFetch.objects.values_list("provider", "outcome"))),
}))
"""


@dataclass
class Database:
    """A database the test process and the worker share."""

    name: str
    url: str

    def count(self, sql: str) -> int:
        return scratch_databases.count(self.name, sql)


def manage(database: Database, *args: str, env: dict | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**os.environ, "DATABASE_URL": database.url, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def migrated():
    """A migrated, empty database to copy from."""
    name = f"{settings.DATABASES['default']['NAME']}_e2e_template"
    with scratch_databases.scratch_database(name) as url:
        template = Database(name, url)
        manage(template, "migrate", "--no-input")
        yield template


@pytest.fixture
def database(migrated, request):
    """A copy of the migrated database for one test, seeded with BNB, KZTE and the schedules
    (every two seconds)."""
    name = f"{migrated.name.removesuffix('_template')}_{request.node.name[-20:]}"
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name).lower()
    with scratch_databases.scratch_database(name, template=migrated.name) as url:
        database = Database(name, url)
        manage(database, "shell", "--verbosity=0", "-c", SEED)
        yield database


@pytest.fixture
def fake_market():
    with FakeMarket() as market:
        market.binance["BNBUSDT"] = "612.34000000"
        market.coingecko["binancecoin"] = "612.1"
        market.nbk_default = {"USD": ("500.00", "1")}
        yield market


def run_worker_until(database: Database, env: dict, tmp_path: Path, done) -> str:
    """Start a worker with embedded beat, wait until ``done()`` holds, stop it; return its log.
    The worker runs in a session of its own, so stopping it stops its pool and beat too."""
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [
                str(CELERY),
                "-A",
                "alem",
                "worker",
                "--beat",
                "--loglevel=INFO",
                "--concurrency=1",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"e2e-{os.getpid()}@%h",
            ],
            cwd=BASE_DIR,
            env={**os.environ, "DATABASE_URL": database.url, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline and worker.poll() is None and not done():
                time.sleep(1)
            reached = done()
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(timeout=10)
    output = log_path.read_text()
    assert reached, f"no prices within {WAIT_SECONDS} s; worker log:\n{output[-5000:]}"
    return output


def prices_landed(database: Database):
    def done() -> bool:
        sources = database.count(
            "SELECT COUNT(DISTINCT source) FROM portfolio_price "
            "WHERE source IN ('binance', 'coingecko', 'nbk')"
        )
        return sources == 3 and database.count("SELECT COUNT(*) FROM portfolio_fxrate") == 1

    return done


def assert_fetched_by_schedule(database: Database, market: FakeMarket) -> None:
    report = json.loads(manage(database, "shell", "--verbosity=0", "-c", REPORT))
    assert report["prices"] == [
        ["BNB", "binance", "USDT", "612.3400000000"],
        ["BNB", "coingecko", "USD", "612.1000000000"],
        ["KZTE", "nbk", "USD", "0.0020000000"],
    ]
    assert report["rates"] == ["500.0000000000"]
    assert ["binance", "ok"] in report["outcomes"]
    assert ["coingecko", "ok"] in report["outcomes"]
    assert ["nbk", "ok"] in report["outcomes"]
    assert market.requests_to("binance")[0].params == {"symbols": '["BNBUSDT"]'}


def worker_env(market: FakeMarket, tmp_path: Path, redis_url: str) -> dict:
    return {
        **market.urls,
        "REDIS_URL": redis_url,
        "ALEM_VAR_DIR": str(tmp_path / "var"),
        "ALEM_PRICE_TIMEOUT_SECONDS": "5",
        "ALEM_PRICE_BACKOFF_SECONDS": "0.1",
    }


@pytest.mark.redis
def test_a_worker_on_redis_fetches_on_schedule_and_stores_the_prices(
    database, fake_market, tmp_path
):
    # Nothing is flushed: the Redis may be shared, and a stale fetch task left by an earlier
    # run would only fetch the same prices again.
    env = worker_env(fake_market, tmp_path, REDIS_E2E_URL)

    log = run_worker_until(database, env, tmp_path, prices_landed(database))

    assert "redis://" in log
    assert_fetched_by_schedule(database, fake_market)


def test_a_worker_on_the_filesystem_broker_fetches_on_schedule_and_stores_the_prices(
    database, fake_market, tmp_path
):
    env = worker_env(fake_market, tmp_path, "")

    log = run_worker_until(database, env, tmp_path, prices_landed(database))

    assert "filesystem://" in log
    assert (tmp_path / "var" / "celery-broker" / "queue").is_dir()
    assert_fetched_by_schedule(database, fake_market)
