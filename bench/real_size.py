"""Is Alem fast at the fund's real size? Measured, not asserted: this prints figures and is not
a test.

On the real-size dataset (``bench/dataset.py``: 10,000 proposals, about 1,000,000 prices, five
years of NAV history at ``--size 1``; built once, reused while it matches), copied into a scratch
database for the run, it serves Alem with gunicorn (``deploy/gunicorn.conf.py``, DEBUG off,
throwaway keys, plain HTTP, ``--workers`` workers) on ``bench/settings.py``: the project's
settings with bare yardstick views beside the real ones (``bench/bare.py``). Then it measures,
each figure side by side with its yardstick in the same run, over ``--rounds`` rounds (medians,
with the spread of the rounds in brackets):

- requests per second of the proposal list and detail API and of the decider queue page ``/``,
  with ``--clients`` concurrent clients for ``--seconds`` per round, against a bare DRF list and
  detail over the proposal table (same pagination and order) and a bare page of 25 proposals;
  ratio = real / bare;
- queries per page of the queue, a proposal page (with the decision form) and the portfolio page
  (Django's test client in a child process, DEBUG off), against the bare page's;
- one decision through ``POST /api/v1/proposals/<id>/decisions/`` with a fresh one-time code:
  its latency alone, p50 / p99 with 20 deciders deciding at once on different proposals, and
  decisions per second with 1, 5 and 20 deciders, against a bare write (lock and stamp the
  proposal row) at the same concurrency;
- a 5-year x 20-asset price backfill (``prices_backfill`` against the test suite's fake market,
  as ``bench/backfill.py``) against a raw COPY of the same rows into the same price table;
  ratio = COPY time / backfill time;
- the portfolio page with the whole NAV history, one client at a time, against the bare page.

Prints one table (what, measured, yardstick, ratio, goal, met?) and writes everything, with the
machine's state, to ``var/bench/real_size.json``.

    make bench BENCH_SIZE=0.01                     # quick, on the embedded server
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/real_size.py --size 1

The load comes from threads of this process on the same machine (on two cores it takes some
of the CPU the server would have, for the real views and the yardsticks alike), and gunicorn's
worker recycling is off so that no restart lands inside a round. The one-time codes are made as
the test suite makes them (``tests/factories.py``, ``otp_code``):
before each decision, outside the timed request, the decider's device forgets the last step it
accepted. Tasks the decisions queue go to Celery's in-memory transport (``--broker`` to change).
"""

import argparse
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench import dataset  # noqa: E402
from bench.databases import (  # noqa: E402
    VAR_DIR,
    add_database_arguments,
    database_create,
    database_drop,
    database_url,
    production_env,
    run_child,
)

LOG = VAR_DIR / "gunicorn.log"
READER = "committee1"  # whose list, detail, queue and pages are measured
PORTFOLIO_PERIOD = "all"
CONCURRENCY = (1, 5, 20)
# The issue's goals: ratio to the yardstick (or absolute), and how each is met.
GOALS = {
    "list": 0.6,
    "detail": 0.6,
    "queue": 0.5,
    "queries": 10,
    "decision_p99_ms": 50.0,
    "scaling": 1.5,
    "backfill": 0.5,
    "portfolio_ms": 100.0,
    # Issue 14: the public page serves "far more" requests than the signed-in portfolio page.
    "public": 5.0,
}


def deciders_in_order() -> list[str]:
    """The 20 deciders interleaved by stage (risk1, committee1, ministry1, risk2, ...), so the
    first five of them are a mix of the three stages too."""
    people = {prefix: count for prefix, _role, count in dataset.PEOPLE}
    columns = [
        [f"{prefix}{n}" for n in range(1, people[prefix] + 1)] for prefix in dataset.DECIDING
    ]
    order = []
    for n in range(max(len(c) for c in columns)):
        order += [column[n] for column in columns if n < len(column)]
    return order


# ---------------------------------------------------------------------------------------------
# Child 1: tokens, sessions, who decides what; queries and profile per page (DEBUG off)
# ---------------------------------------------------------------------------------------------


def child_setup(profile: bool) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from governance import selectors
    from governance.api_tokens import api_token_issue
    from governance.models import Proposal
    from portfolio.models import Fund, Price

    users = get_user_model().objects.in_bulk([READER, *deciders_in_order()], field_name="username")
    fund = Fund.objects.get(slug="alem")
    device_of = {d.user_id: d for d in TOTPDevice.objects.filter(confirmed=True)}

    def session_for(user) -> str:
        client = Client()
        client.force_login(user)
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device_of[user.pk].persistent_id
        session.save()
        return session.session_key

    deciders = {}
    for username in deciders_in_order():
        user = users[username]
        device = device_of[user.pk]
        deciders[username] = {
            "token": api_token_issue(user=user, name="bench")[1],
            "device": {
                "id": device.pk,
                "key": device.bin_key.hex(),
                "step": device.step,
                "t0": device.t0,
                "digits": device.digits,
                "drift": device.drift,
            },
            "waiting": [item.proposal.pk for item in selectors.decisions_awaiting(user)],
        }
    reader = users[READER]
    queue_items = len(deciders[READER]["waiting"]) + len(selectors.fills_awaiting(reader))
    # One proposal at the committee stage that the reader may decide on, for the proposal page,
    # and one at the risk stage for the decision's profile: both kept out of the assignments.
    page_proposal = deciders[READER]["waiting"][-1]
    probe_proposal, profile_proposal = deciders["risk1"]["waiting"][-2:]
    assignments = assign(
        {name: d["waiting"] for name, d in deciders.items()},
        reserved={page_proposal, probe_proposal, profile_proposal},
    )
    for name, d in deciders.items():
        d["assigned"] = assignments[name]
        del d["waiting"]
    executed = Proposal.objects.filter(state="executed").order_by("-created_at", "-id")
    detail_proposal = executed.first().pk
    # The bare write stamps these in turn: more than the deciders acting at once, so two
    # requests in flight never wait for the same row.
    touch = list(Proposal.objects.order_by("pk").values_list("pk", flat=True)[:400])
    reader_token = deciders[READER]["token"]
    session = session_for(reader)
    # The fund discloses (as a published policy would set it) and its document is built, as
    # the 15-minute task keeps it.
    from portfolio.disclosure import disclosure_build

    Fund.objects.filter(pk=fund.pk).update(disclose_holdings=True, disclosure_delay_days=30)
    disclosure_build(Fund.objects.get(pk=fund.pk))

    urls = {
        "list": "/api/v1/proposals/",
        "bare_list": "/bare/api/proposals/",
        "detail": f"/api/v1/proposals/{detail_proposal}/",
        "bare_detail": f"/bare/api/proposals/{detail_proposal}/",
        "queue": "/",
        "proposal_page": f"/proposals/{page_proposal}/",
        "portfolio": f"/funds/{fund.pk}/?days={PORTFOLIO_PERIOD}",
        "bare_page": "/bare/page/",
        "public": f"/public/{fund.slug}/",
    }
    # As the load sends them: pages with the session cookie, the API with the token alone.
    client = Client(HTTP_HOST="127.0.0.1")
    client.cookies[settings.SESSION_COOKIE_NAME] = session
    api_client = Client(HTTP_HOST="127.0.0.1")
    api = {"HTTP_AUTHORIZATION": f"Token {reader_token}"}
    queries = {}
    for name, url in urls.items():
        on, extra = (api_client, api) if "/api/" in url else (client, {})
        queries[name] = measured(
            lambda url=url, on=on, extra=extra: page_queries(on, url, extra, profile=profile)
        )
    probe = deciders["risk1"]
    queries["decision"] = measured(
        lambda: decision_queries(
            api_client, (probe_proposal, profile_proposal), probe["token"], probe["device"], profile
        )
    )
    print(
        json.dumps(
            {
                "deciders": deciders,
                "reader": READER,
                "session": session,
                "session_cookie": settings.SESSION_COOKIE_NAME,
                "urls": urls,
                "touch": touch,
                "queue_items": queue_items,
                "queries": queries,
                "tables": {
                    "price": Price._meta.db_table,
                    "otp_device": TOTPDevice._meta.db_table,
                },
                "nav_snapshots": fund.nav_snapshots.count(),
                "proposals": Proposal.objects.count(),
                "prices": Price.objects.count(),
            }
        )
    )


def measured(measure) -> dict:
    """``measure()``, or what went wrong (the row of the table will say it failed)."""
    try:
        return measure()
    except (Exception, SystemExit) as exc:
        return {"error": str(exc) or type(exc).__name__}


def assign(waiting: dict[str, list[int]], *, reserved: set[int]) -> dict[str, list[int]]:
    """Each proposal to one decider, in turn, each taking the longest-waiting one left that
    they may decide on: so deciders acting at once never decide on the same proposal."""
    taken = set(reserved)
    queues = {name: deque(ids) for name, ids in waiting.items()}
    assigned: dict[str, list[int]] = {name: [] for name in waiting}
    progress = True
    while progress:
        progress = False
        for name, queue in queues.items():
            while queue and queue[0] in taken:
                queue.popleft()
            if queue:
                proposal = queue.popleft()
                taken.add(proposal)
                assigned[name].append(proposal)
                progress = True
    return assigned


def page_queries(client, url: str, extra: dict, *, profile: bool) -> dict:
    """Status, size, queries and their time, the slowest queries, and (``profile``) where
    the time goes, for one request after a warming one."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    warm = client.get(url, **extra)
    if warm.status_code != 200:
        raise SystemExit(f"GET {url} answered {warm.status_code}, not 200")
    with CaptureQueriesContext(connection) as captured:
        began = time.perf_counter()
        response = client.get(url, **extra)
        wall_ms = (time.perf_counter() - began) * 1000
    result = query_summary(captured.captured_queries, wall_ms)
    result["bytes"] = len(response.content)
    if profile:
        result["profile"] = profiled(lambda: client.get(url, **extra))
        result["explain"] = explain(result["slowest"][0]["sql"]) if result["slowest"] else ""
    return result


def decision_queries(client, proposals: tuple[int, int], token: str, device: dict, profile):
    """The queries of one decision through the API, and (``profile``) where the time of
    another goes; each consumes its proposal."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_otp.plugins.otp_totp.models import TOTPDevice

    def decide(proposal_id: int):
        TOTPDevice.objects.filter(pk=device["id"]).update(last_t=-1)
        url = f"/api/v1/proposals/{proposal_id}/decisions/"
        body = {"verdict": "approve", "comment": "", "otp_token": totp(device)}
        response = client.post(
            url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}"
        )
        if response.status_code != 201:
            raise SystemExit(f"POST {url} answered {response.status_code}: {response.content!r}")
        return response

    with CaptureQueriesContext(connection) as captured:
        began = time.perf_counter()
        response = decide(proposals[0])
        wall_ms = (time.perf_counter() - began) * 1000
    result = query_summary(captured.captured_queries, wall_ms)
    result["bytes"] = len(response.content)
    if profile:
        result["profile"] = profiled(lambda: decide(proposals[1]))
        result["explain"] = explain(result["slowest"][0]["sql"]) if result["slowest"] else ""
    return result


def query_summary(captured: list[dict], wall_ms: float) -> dict:
    timed = [(float(q["time"]) * 1000, q["sql"]) for q in captured]
    slowest = sorted(timed, key=lambda item: -item[0])[:3]
    return {
        "queries": len(captured),
        "db_ms": round(sum(ms for ms, _sql in timed), 1),
        "wall_ms": round(wall_ms, 1),
        "slowest": [{"ms": round(ms, 1), "sql": sql} for ms, sql in slowest],
    }


def profiled(request) -> str:
    """cProfile of one request: the project's functions by cumulative time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(request)

    def table(sort: str, restriction, amount: int) -> list[str]:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(*restriction, amount)
        lines = out.getvalue().splitlines()
        start = next((n for n, line in enumerate(lines) if "ncalls" in line), 0)
        # The middleware's wrappers hold every request's whole time: they say nothing.
        return [line for line in lines[start + 1 :] if line.strip() and "(__call__)" not in line]

    out = io.StringIO()
    pstats.Stats(profiler, stream=out).print_stats(0)
    total = next(line.strip() for line in out.getvalue().splitlines() if "function calls" in line)
    return "\n".join(
        [
            total,
            "Alem's functions by cumulative time (ncalls tottime percall cumtime percall):",
            *table("cumulative", (r"/(governance|portfolio|alem)/",), 14),
            "All functions by own time:",
            *table("tottime", (), 8),
        ]
    )


def explain(sql: str) -> str:
    from django.db import connection

    if not sql.lstrip().upper().startswith("SELECT"):
        return ""
    with connection.cursor() as cursor:
        try:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        except Exception as exc:  # a query Django printed with its parameters unquotable
            return f"(not explained: {exc})"
        return "\n".join(row[0] for row in cursor.fetchall())


def totp(device: dict) -> str:
    from django_otp.oath import TOTP

    key = bytes.fromhex(device["key"])
    token = TOTP(key, device["step"], device["t0"], device["digits"], device["drift"]).token()
    return f"{token:0{device['digits']}d}"


# ---------------------------------------------------------------------------------------------
# Child 2: the backfill against the fake market, and a raw COPY of the same rows
# ---------------------------------------------------------------------------------------------

BACKFILL_PROVIDERS = ("binance", "coingecko")


def backfill_assets(count: int) -> list[tuple[str, str, str]]:
    """(symbol, Binance pair, CoinGecko id): assets of their own, so the backfill stores every
    row into the real-size price table whatever it holds."""
    return [(f"BKF{n:02d}", f"BKF{n:02d}USDT", f"bench-backfill-{n:02d}") for n in range(count)]


def child_backfill(days: int, count: int, rounds: int) -> None:
    import django

    django.setup()
    from django.db import connection, transaction

    from portfolio.models import Asset, Price
    from portfolio.prices.services import prices_backfill

    assets = [
        Asset.objects.create(symbol=symbol, name=symbol, binance_symbol=pair, coingecko_id=coin)
        for symbol, pair, coin in backfill_assets(count)
    ]
    symbols = [asset.symbol for asset in assets]
    mine = Price.objects.filter(asset__in=assets)
    columns = ["asset_id", "source", "quote_currency", "price", "observed_at", "fetched_at"]
    table = Price._meta.db_table
    runs = []
    for _ in range(rounds):
        mine.delete()
        started = time.perf_counter()
        reports = [
            prices_backfill(provider=provider, days=days, symbols=symbols)
            for provider in BACKFILL_PROVIDERS
        ]
        backfill_seconds = time.perf_counter() - started
        failed = [r.outcome for r in reports if r.outcome != "ok"]
        if failed:
            raise SystemExit(f"the backfill did not succeed: {failed}")
        rows = list(mine.values_list(*columns))
        mine.delete()
        started = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            names = ", ".join(f'"{c}"' for c in columns)
            with cursor.cursor.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        copy_seconds = time.perf_counter() - started
        if mine.count() != len(rows):
            raise SystemExit("the COPY did not store the rows the backfill stored")
        runs.append(
            {
                "rows": len(rows),
                "requests": sum(r.requests for r in reports),
                "backfill_seconds": round(backfill_seconds, 3),
                "copy_seconds": round(copy_seconds, 3),
            }
        )
    print(json.dumps({"runs": runs, "table_rows": Price.objects.count()}))


# ---------------------------------------------------------------------------------------------
# Parent: the server, the load, the table
# ---------------------------------------------------------------------------------------------


class Server:
    """gunicorn with the project's configuration on a free port of 127.0.0.1. Worker recycling
    (max_requests) is turned off so that no restart lands inside a round."""

    def __init__(self, env: dict[str, str], workers: int, log: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **os.environ,
            **env,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
        }
        self.process = None

    def __enter__(self) -> "Server":
        import httpx

        gunicorn = Path(sys.executable).parent / "gunicorn"
        command = [str(gunicorn), "-c", "deploy/gunicorn.conf.py", "--max-requests", "0"]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log, "w")
        self.process = subprocess.Popen(
            [*command, "alem.wsgi:application"],
            cwd=BASE_DIR,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.__exit__()
                raise SystemExit(f"gunicorn stopped at start; its log: {self.log}")
            try:
                if httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.__exit__()
        raise SystemExit(f"gunicorn did not answer within 60 s; its log: {self.log}")

    def __exit__(self, *exc_info) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def spread(values: list[float]) -> dict:
    return {
        "median": statistics.median(values) if values else float("nan"),
        "min": min(values, default=float("nan")),
        "max": max(values, default=float("nan")),
        "rounds": values,
    }


class Load:
    """HTTP load from threads of this process, each with its own connection (gunicorn's sync
    workers close it after each answer anyway)."""

    def __init__(self, base_url: str, *, token: str, session: tuple[str, str]):
        self.base_url = base_url
        self.token = token
        self.session = session

    def client(self, token: str | None = None, *, page: bool = False):
        """A client with the API token, or for a page (``page``) with the session cookie."""
        import httpx

        if page:
            return httpx.Client(
                base_url=self.base_url, timeout=300, cookies={self.session[0]: self.session[1]}
            )
        return httpx.Client(
            base_url=self.base_url,
            timeout=300,
            headers={"Authorization": f"Token {token or self.token}"},
        )

    def closed_loop(self, url: str, *, clients: int, seconds: float, page: bool) -> dict:
        """``clients`` threads asking for ``url`` back to back for ``seconds`` (each finishes
        the request it is in): answers per second, latencies, failures, bytes."""
        latencies: list[float] = []
        failures: list[str] = []
        sizes: list[int] = []
        lock = threading.Lock()
        deadline = time.perf_counter() + seconds

        def worker():
            with self.client(page=page) as client:
                while time.perf_counter() < deadline:
                    began = time.perf_counter()
                    response = client.get(url)
                    took = time.perf_counter() - began
                    with lock:
                        latencies.append(took)
                        sizes.append(len(response.content))
                        if response.status_code != 200:
                            failures.append(f"{response.status_code} {url}")

        began = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        return {
            "requests": len(latencies),
            "per_second": len(latencies) / elapsed,
            "latencies": latencies,
            "failures": failures,
            "bytes": statistics.median(sizes) if sizes else 0,
        }

    def warm(self, url: str, *, page: bool, times: int = 3) -> None:
        with self.client(page=page) as client:
            for _ in range(times):
                response = client.get(url)
                if response.status_code != 200:
                    raise SystemExit(f"GET {url} answered {response.status_code} (see {LOG})")


def throughput(
    load: Load, real: str, bare: str, *, page: bool, args, real_page: bool | None = None
) -> dict:
    """Requests per second of ``real`` and ``bare``, alternating within each round;
    ``real_page`` False asks for ``real`` without the session cookie (a public visitor)."""
    real_page = page if real_page is None else real_page
    load.warm(real, page=real_page)
    load.warm(bare, page=page)
    runs = {"real": [], "bare": []}
    sizes = {}
    for n in range(args.rounds):
        order = ("real", "bare") if n % 2 == 0 else ("bare", "real")
        for which in order:
            url = real if which == "real" else bare
            run = load.closed_loop(
                url,
                clients=args.clients,
                seconds=args.seconds,
                page=real_page if which == "real" else page,
            )
            if run["failures"]:
                # Errors answer faster than pages: a rate counting them would flatter.
                raise SystemExit(
                    f"{len(run['failures'])} of {run['requests']} requests failed, e.g. "
                    f"{run['failures'][0]} (see {LOG})"
                )
            runs[which].append(run["per_second"])
            sizes[which] = run["bytes"]
    ratios = [r / b for r, b in zip(runs["real"], runs["bare"], strict=True)]
    return {
        "real": spread(runs["real"]),
        "bare": spread(runs["bare"]),
        "ratio": spread(ratios),
        "bytes": sizes,
    }


def sequential_latency(load: Load, real: str, bare: str, *, args, per_round: int = 6) -> dict:
    """Server time of ``real`` and ``bare`` pages asked one at a time (medians per round)."""
    samples = {"real": [], "bare": []}
    per_round_median = {"real": [], "bare": []}
    with load.client(page=True) as client:
        for url in (real, bare):
            client.get(url)
        for _ in range(args.rounds):
            for which, url in (("real", real), ("bare", bare)):
                taken = []
                for _ in range(per_round):
                    began = time.perf_counter()
                    response = client.get(url)
                    taken.append((time.perf_counter() - began) * 1000)
                    if response.status_code != 200:
                        raise SystemExit(f"GET {url} answered {response.status_code} (see {LOG})")
                samples[which] += taken
                per_round_median[which].append(statistics.median(taken))
    return {
        which: {
            "median_ms": statistics.median(samples[which]),
            "p95_ms": percentile(samples[which], 0.95),
            "rounds_median_ms": per_round_median[which],
        }
        for which in samples
    }


class Deciders:
    """The deciders acting through the API, each on the proposals assigned to them."""

    def __init__(self, load: "Load", setup: dict, run_db: str):
        self.load = load
        self.setup = setup
        self.run_db = run_db
        self.queues = {name: deque(d["assigned"]) for name, d in setup["deciders"].items()}
        self.touch = itertools.cycle(setup["touch"])
        self.lock = threading.Lock()

    def run(self, lanes: list[list[str]], *, bare: bool) -> dict:
        """One thread per lane, all started together; a lane's deciders decide in turn, one
        decision each (a decider whose proposals ran out is skipped). Decisions per second over
        the wall time; latencies of the requests alone (the one-time code is made before)."""
        import psycopg

        latencies: list[float] = []
        failures: list[str] = []
        otp_table = self.setup["tables"]["otp_device"]
        ready = threading.Barrier(len(lanes) + 1)

        def lane(names: list[str]):
            deciders = {name: self.setup["deciders"][name] for name in set(names)}
            with (
                psycopg.connect(database_url(self.run_db), autocommit=True) as db,
                contextlib.ExitStack() as stack,
            ):
                clients = {
                    name: stack.enter_context(self.load.client(d["token"]))
                    for name, d in deciders.items()
                }
                ready.wait()
                for name in names:
                    decider, client = deciders[name], clients[name]
                    with self.lock:
                        if bare:
                            proposal = next(self.touch)
                        elif self.queues[name]:
                            proposal = self.queues[name].popleft()
                        else:
                            continue
                    if bare:
                        url = f"/bare/api/proposals/{proposal}/touch/"
                        began = time.perf_counter()
                        response = client.post(url)
                    else:
                        # Outside the timed request: a code the device accepts now.
                        db.execute(
                            f'UPDATE "{otp_table}" SET last_t = -1 WHERE id = %s',
                            (decider["device"]["id"],),
                        )
                        body = {
                            "verdict": "approve",
                            "comment": "",
                            "otp_token": totp(decider["device"]),
                        }
                        url = f"/api/v1/proposals/{proposal}/decisions/"
                        began = time.perf_counter()
                        response = client.post(url, json=body)
                    took = (time.perf_counter() - began) * 1000
                    with self.lock:
                        latencies.append(took)
                        if response.status_code != 201:
                            failures.append(f"{response.status_code} {url} {response.text[:200]}")

        threads = [threading.Thread(target=lane, args=(names,)) for names in lanes]
        for thread in threads:
            thread.start()
        ready.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        return {
            "decisions": len(latencies),
            "per_second": len(latencies) / elapsed if latencies else 0.0,
            "latencies_ms": latencies,
            "failures": failures,
        }


def decisions(deciders: Deciders, args) -> dict:
    """Per round: each decider once, one after the other (alone); then 5 and 20 deciders at
    once, each deciding back to back; each followed by the bare write at the same
    concurrency."""
    order = deciders_in_order()
    lanes = {
        1: [order],
        5: [[name] * args.per_decider_5 for name in order[:5]],
        20: [[name] * args.per_decider_20 for name in order],
    }
    found = {(c, bare): [] for c in CONCURRENCY for bare in (False, True)}
    for _ in range(args.decision_rounds):
        for concurrency in CONCURRENCY:
            for bare in (False, True):
                found[(concurrency, bare)].append(deciders.run(lanes[concurrency], bare=bare))
    result = {}
    for (concurrency, bare), runs in found.items():
        latencies = [ms for r in runs for ms in r["latencies_ms"]]
        result[f"{'bare' if bare else 'real'}_{concurrency}"] = {
            "decisions": len(latencies),
            "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "rounds_p99_ms": [percentile(r["latencies_ms"], 0.99) for r in runs],
            "per_second": spread([r["per_second"] for r in runs if r["decisions"]]),
            "failures": [f for r in runs for f in r["failures"]],
        }
    return result


def refresh_prices(run_db: str, table: str) -> None:
    """A fresh quote from each source still quoting each asset, as the minute fetch keeps them:
    the consensus is fresh for the pages and can back final approvals."""
    import psycopg

    with psycopg.connect(database_url(run_db), autocommit=True) as db:
        db.execute(
            f"""
            INSERT INTO "{table}" (asset_id, source, quote_currency, price, observed_at,
                                   fetched_at)
            SELECT DISTINCT ON (p.asset_id, p.source)
                   p.asset_id, p.source, p.quote_currency, p.price, now(), now()
            FROM "{table}" p
            JOIN (SELECT asset_id, max(observed_at) AS newest FROM "{table}"
                  GROUP BY asset_id) n ON n.asset_id = p.asset_id
            WHERE p.source IN ('binance', 'coingecko')
              AND p.observed_at >= n.newest - interval '1 day'
            ORDER BY p.asset_id, p.source, p.observed_at DESC
            """
        )


def backfill(run_db: str, args) -> dict:
    from tests.portfolio.fake_market import FakeMarket

    with FakeMarket() as market:
        for _, pair, coin in backfill_assets(args.backfill_assets):
            market.binance_history.add(pair)
            market.coingecko_history.add(coin)
        found = run_child(
            __file__,
            [
                "backfill",
                "--backfill-days",
                str(args.backfill_days),
                "--backfill-assets",
                str(args.backfill_assets),
                "--rounds",
                str(args.backfill_rounds),
            ],
            database_url(run_db),
            **production_env(run_db),
            ALEM_PRICE_TIMEOUT_SECONDS="60",
            **market.urls,
        )
    runs = found["runs"]
    found["backfill_seconds"] = spread([r["backfill_seconds"] for r in runs])
    found["copy_seconds"] = spread([r["copy_seconds"] for r in runs])
    found["ratio"] = spread([r["copy_seconds"] / r["backfill_seconds"] for r in runs])
    return found


def attempt(into: dict, key: str, what: str, measure, errors: dict) -> None:
    """``into[key] = measure()``, announced as ``what``. A failure (a page answering 500 while
    the application is half edited, say) goes into ``errors[key]`` and the other rows go on."""
    print(f"run: {what}", flush=True)
    try:
        into[key] = measure()
    except (Exception, SystemExit) as exc:
        errors[key] = str(exc) or type(exc).__name__
        print(f"run: {what}: FAILED: {errors[key]}", flush=True)


def machine_state() -> dict:
    def top() -> list[str]:
        try:
            out = subprocess.run(
                ["ps", "-eo", "pcpu,etimes,comm", "--sort=-pcpu"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        except OSError:
            return []
        return [" ".join(line.split()) for line in out.splitlines()[1:6]]

    return {"load_average": [round(x, 2) for x in os.getloadavg()], "top_cpu": top()}


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"  # NaN is not equal to itself


def ranged(s: dict, digits: int = 1) -> str:
    return f"{fmt(s['median'], digits)} [{fmt(s['min'], digits)}–{fmt(s['max'], digits)}]"


def yes(met: bool) -> str:
    return "yes" if met else "NO"


def table_rows(found: dict) -> list[dict]:
    """The issue's rows, each from what was found; a row whose measurement failed says so."""
    rows = []

    def row(what: str, goal: str, build, key: str) -> None:
        try:
            rows.append({"what": what, "goal": goal, "ratio": "", **build()})
        except Exception as exc:  # its measurement failed: the row says so, the others stand
            why = found.get("errors", {}).get(key) or found.get("queries", {}).get(key, {})
            why = why.get("error", exc) if isinstance(why, dict) else why
            failed = f"FAILED: {why}"[:70]
            rows.append(
                {"what": what, "measured": failed, "yardstick": "", "ratio": "", "goal": goal}
                | {"met": False}
            )

    def reads(key: str, yardstick: str, digits: int = 2):
        t = found["throughput"][key]
        return {
            "measured": ranged(t["real"]),
            "yardstick": f"{yardstick} {ranged(t['bare'])}",
            "ratio": ranged(t["ratio"], digits),
            "met": t["ratio"]["median"] >= GOALS[key],
        }

    row("proposal list API, req/s", f"≥ {GOALS['list']}", lambda: reads("list", "bare DRF"), "list")
    row(
        "proposal detail API, req/s",
        f"≥ {GOALS['detail']}",
        lambda: reads("detail", "bare DRF"),
        "detail",
    )
    queue = found.get("throughput", {}).get("queue", {})
    kb = queue.get("bytes", {}).get("real", 0) / 1024
    row(
        f"decider queue page / ({found.get('queue_items', 0):,} waiting, {kb:,.0f} KB), req/s",
        f"≥ {GOALS['queue']}",
        lambda: reads("queue", "bare 25-row page", 3),
        "queue",
    )

    def queries(key: str):
        found_queries = found["queries"]
        return {
            "measured": str(found_queries[key]["queries"]),
            "yardstick": f"bare page {found_queries['bare_page']['queries']}",
            "met": found_queries[key]["queries"] <= GOALS["queries"],
        }

    for key, page in (
        ("queue", "queue"),
        ("proposal_page", "proposal page"),
        ("portfolio", "portfolio"),
    ):
        row(f"queries per page: {page}", f"≤ {GOALS['queries']}", lambda key=key: queries(key), key)

    def failed(run: dict) -> str:
        return f" ({len(run['failures'])} FAILED)" if run["failures"] else ""

    def alone():
        d = found["decisions"]
        return {
            "measured": f"{fmt(d['real_1']['p50_ms'], 0)} ({fmt(d['real_1']['p99_ms'], 0)})"
            + failed(d["real_1"]),
            "yardstick": f"bare write {fmt(d['bare_1']['p50_ms'], 0)} "
            f"({fmt(d['bare_1']['p99_ms'], 0)})",
            "met": None,
        }

    def together():
        d = found["decisions"]
        p99, rounds = d["real_20"], d["real_20"]["rounds_p99_ms"]
        return {
            "measured": f"{fmt(p99['p99_ms'], 0)} [{fmt(min(rounds), 0)}–{fmt(max(rounds), 0)}]"
            f" (p50 {fmt(p99['p50_ms'], 0)})" + failed(p99),
            "yardstick": f"bare write {fmt(d['bare_20']['p99_ms'], 0)}",
            "met": p99["p99_ms"] < GOALS["decision_p99_ms"] and not p99["failures"],
        }

    def scaling():
        d = found["decisions"]
        rates = [d[f"real_{c}"]["per_second"]["median"] for c in CONCURRENCY]
        bare = [d[f"bare_{c}"]["per_second"]["median"] for c in CONCURRENCY]
        factor = rates[-1] / rates[0] if rates[0] else float("nan")
        bare_factor = bare[-1] / bare[0] if bare[0] else float("nan")
        return {
            "measured": " / ".join(fmt(r, 1) for r in rates),
            "yardstick": "bare writes/s " + " / ".join(fmt(r, 0) for r in bare),
            "ratio": f"×{fmt(factor, 2)} (bare ×{fmt(bare_factor, 2)})",
            "met": factor >= GOALS["scaling"],
        }

    row("one decision alone, ms p50 (p99)", "(context)", alone, "decisions")
    row(
        "one decision, p99 with 20 deciders at once, ms",
        f"< {GOALS['decision_p99_ms']:.0f}",
        together,
        "decisions",
    )
    row(
        "decisions/s with 1 / 5 / 20 deciders",
        f"20 ≥ {GOALS['scaling']}× 1",
        scaling,
        "decisions",
    )

    def prices():
        b = found["backfill"]
        return {
            "measured": ranged(b["backfill_seconds"], 2),
            "yardstick": f"raw COPY {ranged(b['copy_seconds'], 2)}",
            "ratio": ranged(b["ratio"], 3),
            "met": b["ratio"]["median"] >= GOALS["backfill"],
        }

    rows_stored = found.get("backfill", {}).get("runs", [{}])[0].get("rows", 0)
    row(
        f"5-year × 20-asset price backfill ({rows_stored:,} rows), s",
        f"≥ {GOALS['backfill']}",
        prices,
        "backfill",
    )

    def portfolio():
        p = found["portfolio"]
        return {
            "measured": f"{fmt(p['real']['median_ms'], 0)} ({fmt(p['real']['p95_ms'], 0)})",
            "yardstick": f"bare page {fmt(p['bare']['median_ms'], 0)} "
            f"({fmt(p['bare']['p95_ms'], 0)})",
            "met": p["real"]["median_ms"] < GOALS["portfolio_ms"],
        }

    row(
        f"portfolio page, all NAV history ({found.get('nav_snapshots', 0):,} days), ms p50 (p95)",
        f"< {GOALS['portfolio_ms']:.0f}",
        portfolio,
        "portfolio",
    )
    row(
        "public fund page (no sign-in, stored document), req/s",
        f"≥ {GOALS['public']:.0f}× portfolio",
        lambda: reads("public", "signed-in portfolio page", 1),
        "public",
    )
    return rows


def print_table(rows: list[dict]) -> None:
    headers = ("what", "measured", "yardstick", "ratio", "goal", "met?")
    cells = [
        [
            *(r[key] for key in ("what", "measured", "yardstick", "ratio", "goal")),
            "" if r["met"] is None else yes(r["met"]),
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(c[n]) for c in cells)) for n, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def print_profile(queries: dict, *, profile: bool) -> None:
    print("\nWhere the time goes (one request each, Django's test client, DEBUG off):")
    for name, q in queries.items():
        if "error" in q:
            print(f"  {name:<14} FAILED: {q['error'][:200]}")
            continue
        print(
            f"  {name:<14} {q['queries']:>3} queries, {fmt(q['db_ms'])} ms in the database of "
            f"{fmt(q['wall_ms'])} ms, {q['bytes'] / 1024:,.0f} KB"
        )
        for slow in q["slowest"][:2]:
            sql = re.sub(r"^SELECT .*? FROM ", "SELECT … FROM ", " ".join(slow["sql"].split()))
            print(f"      {fmt(slow['ms']):>7} ms  {sql[:160]}{'…' if len(sql) > 160 else ''}")
        if profile and q.get("profile"):
            print("\n".join("        " + line for line in q["profile"].splitlines()))
        if profile and q.get("explain"):
            print("\n".join("        | " + line for line in q["explain"].splitlines()[:16]))


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1.0, help="dataset size; 1 = the real size")
    parser.add_argument("--name", help="dataset database (default: bench/dataset.py's)")
    parser.add_argument("--rebuild", action="store_true", help="build the dataset again")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each read measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--clients", type=int, default=4, help="concurrent readers")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--decision-rounds", type=int, default=3)
    parser.add_argument("--per-decider-5", type=int, default=6)
    parser.add_argument("--per-decider-20", type=int, default=5)
    parser.add_argument("--backfill-rounds", type=int, default=3)
    parser.add_argument("--backfill-days", type=int, default=5 * 365 + 1)
    parser.add_argument("--backfill-assets", type=int, default=20)
    parser.add_argument("--broker", default="memory://", help="where queued tasks go")
    parser.add_argument("--profile", action="store_true", help="cProfile and EXPLAIN per page")
    parser.add_argument("--keep", action="store_true", help="keep the run's database copy")
    parser.add_argument("--output", default=str(VAR_DIR / "real_size.json"))
    parser.add_argument("mode", nargs="?", help=argparse.SUPPRESS)
    add_database_arguments(parser)
    args = parser.parse_args()
    if args.child:
        if args.mode == "setup":
            child_setup(args.profile)
        else:
            child_backfill(args.backfill_days, args.backfill_assets, args.backfill_rounds)
        return

    began = time.perf_counter()
    state_before = machine_state()
    built = dataset.ensure(args.size, name=args.name, rebuild=args.rebuild)
    run_db = f"{built['name']}_run"[:63]
    print(f"run: copying {built['name']} into {run_db}", flush=True)
    started = time.perf_counter()
    database_create(run_db, template=built["name"])
    copy_seconds = time.perf_counter() - started
    env = production_env(run_db, broker_url=args.broker)
    try:
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--no-input", "-v", "0"],
            cwd=BASE_DIR,
            env={**os.environ, **env},
            check=True,
        )
        print("run: tokens, sessions, deciders' proposals, queries per page", flush=True)
        setup = run_child(
            __file__,
            ["setup", *(["--profile"] if args.profile else [])],
            database_url(run_db),
            **env,
        )
        refresh_prices(run_db, setup["tables"]["price"])
        found = {
            "queue_items": setup["queue_items"],
            "nav_snapshots": setup["nav_snapshots"],
            "queries": setup["queries"],
            "throughput": {},
            "errors": {},
        }
        with Server(env, args.workers, LOG) as server:
            print(f"run: gunicorn ({args.workers} workers) on {server.url}", flush=True)
            load = Load(
                server.url,
                token=setup["deciders"][READER]["token"],
                session=(setup["session_cookie"], setup["session"]),
            )
            urls = setup["urls"]
            for key, page in (("list", False), ("detail", False), ("queue", True)):
                bare = {"list": "bare_list", "detail": "bare_detail", "queue": "bare_page"}[key]
                attempt(
                    found["throughput"],
                    key,
                    f"{key} vs {bare}, {args.rounds} rounds",
                    lambda key=key, bare=bare, page=page: throughput(
                        load, urls[key], urls[bare], page=page, args=args
                    ),
                    found["errors"],
                )
            attempt(
                found["throughput"],
                "public",
                f"public fund page vs the signed-in portfolio page, {args.rounds} rounds",
                # A visitor of the public page has no session; the portfolio page needs one.
                lambda: throughput(
                    load, urls["public"], urls["portfolio"], page=True, args=args, real_page=False
                ),
                found["errors"],
            )
            attempt(
                found,
                "portfolio",
                "portfolio page, one request at a time",
                lambda: sequential_latency(load, urls["portfolio"], urls["bare_page"], args=args),
                found["errors"],
            )
            refresh_prices(run_db, setup["tables"]["price"])
            attempt(
                found,
                "decisions",
                f"decisions, {args.decision_rounds} rounds",
                lambda: decisions(Deciders(load, setup, run_db), args),
                found["errors"],
            )
        attempt(
            found,
            "backfill",
            f"backfill vs COPY, {args.backfill_rounds} rounds",
            lambda: backfill(run_db, args),
            found["errors"],
        )
    finally:
        if not args.keep:
            database_drop(run_db)

    failures = [f for d in found.get("decisions", {}).values() for f in d["failures"]]
    rows = table_rows(found)
    report = {
        "dataset": built,
        "run": {
            "size": args.size,
            "database_copy_seconds": round(copy_seconds, 1),
            "seconds": round(time.perf_counter() - began, 1),
            "workers": args.workers,
            "clients": args.clients,
            "rounds": args.rounds,
            "seconds_per_round": args.seconds,
            "decision_rounds": args.decision_rounds,
            "broker": args.broker,
            "server": os.environ.get("DATABASE_URL", "").split("@")[-1].split("/")[0],
        },
        "machine": {"cores": os.cpu_count(), "before": state_before, "after": machine_state()},
        "table": rows,
        "found": found,
        "failures": failures,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, default=str))

    print(
        f"\nAlem at size {args.size:g}: {setup['proposals']:,} proposals, {setup['prices']:,} "
        f"prices, {setup['nav_snapshots']:,} NAV days; gunicorn {args.workers} workers, DEBUG "
        f"off; {args.rounds} rounds of {args.seconds:g} s with {args.clients} clients; "
        "median [min–max of the rounds]\n"
    )
    print_table(rows)
    print_profile(found["queries"], profile=args.profile)
    before, after = report["machine"]["before"], report["machine"]["after"]
    print(
        f"\nMachine: {os.cpu_count()} cores, load average {before['load_average']} before, "
        f"{after['load_average']} after; busiest processes before: "
        f"{'; '.join(before['top_cpu'][:3])}"
    )
    source = "reused" if built["reused"] else f"built in {built['build_seconds']} s"
    print(
        f"Dataset {built['name']} {source}; run took {report['run']['seconds']} s; "
        f"written to {output}"
    )
    if failures:
        print(
            f"\n{len(failures)} decisions or bare writes failed, e.g.: " + "; ".join(failures[:3])
        )
    for key, error in found["errors"].items():
        print(f"\n{key} could not be measured: {error}")


if __name__ == "__main__":
    main()
