"""The real-size dataset of the benchmark: one Alem-like fund as it stands after five years.

At ``--size 1`` (the real size): 20 whitelisted assets (BNB first), about 1,000,000 prices (20
assets x Binance, CoinGecko and Yahoo, five years of intraday quotes and daily closes), five years
of USD/KZT rates and of daily NAV snapshots, the fund's people (5 managers, 6 risk officers, 9
committee members, 5 ministry officials, 3 treasury operators, 2 auditors, 2 fund
administrators: 20 deciders) and 10,000 proposals over the workflow: drafts, in review at each
stage (enough that each of the 20 deciders has proposals of their own to decide on), approved and
partly filled, executed with their fills, rejected, returned for changes, withdrawn, expired;
with their decisions, executions, ledger entries and audit events. ``--size 0.01`` scales the
proposals, prices and history down for a quick run; the people stay.

How it is built, and why:

- the fund, its people, roles, authenticators, policy and contributions go through the services
  (``governance.services``), as does a representative subset of the proposals (up to 100, one
  of each life in turn), so those are exactly what the application writes;
- the rest of the proposals would take the services about twenty minutes on two cores (about
  40 ms per decision, 30 per submission or fill, measured), so they are written in bulk (COPY):
  their lives are planned here, spread over the five years, and their audit events are written
  by the application's own event writers (``governance.events``) with the chain's append
  replaced by a collector, then hashed and sealed as ``governance.audit`` does. The compliance
  reports and evidence they carry are copies of the ones the services wrote for the subset.
  The chain verifies (``audit_verify``), records and role grants included;
- prices and rates go in by COPY, as market data does not pass through the workflow; the NAV
  snapshots are taken by ``portfolio.services.nav_snapshot_take``, one per day.

Built into the database ``--name`` (default ``alem_bench_real``, with the size in the name
unless it is 1) on the server of DATABASE_URL, labelled with a comment holding the size and a
fingerprint of the migrations, the pinned requirements and this file. A database whose label
matches is reused as it is; ``--rebuild`` builds it again. The benchmark works on a copy of it
(``bench/real_size.py``), so it stays as built.

    .venv/bin/python embedded_db.py -- .venv/bin/python bench/dataset.py --size 0.01
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres .venv/bin/python bench/dataset.py
"""

import argparse
import datetime as dt
import hashlib
import json
import math
import random
import sys
import time
from decimal import Decimal, localcontext
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.databases import (  # noqa: E402
    add_database_arguments,
    database_create,
    database_label,
    database_set_label,
    database_url,
    production_env,
    run_child,
)

SEED = 20_26_12
PROPOSALS = 10_000  # at size 1
PRICES = 1_000_000  # at size 1
HISTORY_DAYS = 5 * 365 + 1  # at size 1
MIN_HISTORY_DAYS = 30
SUBSET_MAX = 100  # proposals through the services

# symbol, name, price in USD at the start of the history, weight among the proposals
ASSETS = [
    ("BNB", "BNB", 600, 15),
    ("BTC", "Bitcoin", 60_000, 15),
    ("ETH", "Ether", 3_000, 12),
    ("SOL", "Solana", 150, 6),
    ("XRP", "XRP", 0.6, 4),
    ("ADA", "Cardano", 0.45, 4),
    ("DOGE", "Dogecoin", 0.12, 3),
    ("TON", "Toncoin", 5.5, 4),
    ("TRX", "TRON", 0.12, 3),
    ("AVAX", "Avalanche", 30, 4),
    ("DOT", "Polkadot", 6.5, 4),
    ("LINK", "Chainlink", 14, 4),
    ("POL", "Polygon", 0.5, 3),
    ("LTC", "Litecoin", 75, 3),
    ("BCH", "Bitcoin Cash", 350, 3),
    ("XLM", "Stellar", 0.11, 3),
    ("ATOM", "Cosmos", 7, 3),
    ("UNI", "Uniswap", 8, 3),
    ("ETC", "Ethereum Classic", 22, 3),
    ("NEAR", "NEAR Protocol", 5, 3),
]
# Sources that stopped quoting an asset (days before the end of the history), as in the
# profile: the newest price of one source is old for some assets. Only old proposals buy them.
STOPPED = {("POL", "binance"): 400, ("XLM", "coingecko"): 120, ("ETC", "coingecko"): 120}
QUIET_ASSETS = {symbol for symbol, _source in STOPPED}

# username prefix, role, how many
PEOPLE = [
    ("manager", "propose", 5),
    ("risk", "review_risk", 6),
    ("committee", "vote_committee", 9),
    ("ministry", "approve_ministry", 5),
    ("treasury", "execute_trades", 3),
    ("auditor", "audit", 2),
    ("fundadmin", "manage_policy", 2),
]
DECIDING = ("risk", "committee", "ministry")
PASSWORD = "bench-only-password"  # nobody signs in with it: the benchmark issues tokens

# Share of the proposals in each life (the rest of in_review's share is split by stage below).
LIVES = {
    "executed": 0.50,
    "rejected": 0.07,
    "withdrawn": 0.06,
    "expired": 0.04,
    "approved": 0.015,
    "in_review": 0.20,
    "changes_requested": 0.025,
    "draft": 0.09,
}
IN_REVIEW_STAGES = {1: 0.25, 2: 0.60, 3: 0.15}  # stage order -> share of those in review
# At least this many proposals wait for each decider, so every one of them has some to decide.
MIN_WAITING_PER_DECIDER = 3


def size_tag(size: float) -> str:
    return f"{size:g}".replace(".", "_").replace("-", "_")


def default_name(size: float) -> str:
    return "alem_bench_real" if size == 1 else f"alem_bench_real_{size_tag(size)}"


def fingerprint() -> str:
    """What the dataset depends on: the migrations (its schema), the pinned requirements (the
    third-party apps' tables) and this builder."""
    digest = hashlib.sha256()
    paths = [
        *sorted(BASE_DIR.glob("*/migrations/*.py")),
        BASE_DIR / "requirements.txt",
        Path(__file__).resolve(),
    ]
    for path in paths:
        digest.update(str(path.relative_to(BASE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def ensure(size: float, *, name: str | None = None, rebuild: bool = False) -> dict:
    """The dataset of ``size`` in database ``name``: reused if its label matches, else built.
    Returns its label (what it holds, how long it took) with ``reused`` set."""
    name = name or default_name(size)
    wanted = {"size": f"{size:g}", "fingerprint": fingerprint()}
    label = database_label(name)
    if not rebuild and label and all(label.get(k) == v for k, v in wanted.items()):
        print(f"dataset: reusing {name} (size {label['size']}, built {label['built_at']})")
        return {**label, "name": name, "reused": True}
    why = "rebuild asked" if rebuild else ("label differs" if label else "not built yet")
    print(f"dataset: building {name} at size {size:g} ({why}); progress on stderr", flush=True)
    database_create(name)
    started = time.perf_counter()
    summary = run_child(
        __file__,
        ["--size", f"{size:g}"],
        database_url(name),
        show_progress=True,
        **production_env(name),
    )
    label = {
        **wanted,
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 1),
        **summary,
    }
    database_set_label(name, label)
    return {**label, "name": name, "reused": False}


# ---------------------------------------------------------------------------------------------
# Child: the build, in one Django process
# ---------------------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def money(value: float, step: str = "0.01") -> Decimal:
    return Decimal(str(value)).quantize(Decimal(step))


def price_text(value: float) -> Decimal:
    """A price with four significant decimals at least (small coins need more than cents)."""
    digits = max(4, 6 - math.floor(math.log10(max(value, 1e-9))))
    return Decimal(f"{value:.{min(digits, 10)}f}")


class PricePaths:
    """Daily closes of every asset over the history, a seeded mean-reverting walk, and the
    USD/KZT rate: what the COPY writes and what the planned fills are priced at."""

    def __init__(self, rng: random.Random, days: int, start: dt.datetime):
        self.days = days
        self.start = start
        self.closes: dict[str, list[float]] = {}
        for symbol, _name, base, _weight in ASSETS:
            level, path = 0.0, []
            for _ in range(days + 1):
                level = 0.985 * level + rng.gauss(0, 0.03)
                path.append(base * math.exp(max(min(level, 0.7), -0.7)))
            self.closes[symbol] = path
        rate, self.kzt = 450.0, []
        for _ in range(days + 1):
            rate = max(420.0, min(540.0, rate + rng.gauss(0.02, 1.2)))
            self.kzt.append(rate)

    def day_index(self, moment: dt.datetime) -> int:
        return max(0, min(self.days, (moment - self.start).days))

    def at(self, symbol: str, moment: dt.datetime) -> float:
        return self.closes[symbol][self.day_index(moment)]


class Builder:
    def __init__(self, size: float):
        from django.utils import timezone

        self.size = size
        self.rng = random.Random(SEED)
        self.now = timezone.now().replace(microsecond=0)
        self.days = max(MIN_HISTORY_DAYS, round(HISTORY_DAYS * size))
        self.start = self.now - dt.timedelta(days=self.days)
        self.proposals = max(100, round(PROPOSALS * size))
        self.paths = PricePaths(self.rng, self.days, self.start)
        self.summary: dict = {"proposals": self.proposals, "history_days": self.days}

    # -- people, fund, policy (services) --------------------------------------------------------

    def people_and_fund(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.hashers import make_password
        from django_otp.plugins.otp_totp.models import TOTPDevice

        from governance import services
        from governance.policies import StageSpec
        from portfolio.models import Asset, Fund, FundingSource, FundRole

        self.fund = Fund.objects.create(
            name="Alem Crypto Fund",
            slug="alem",
            max_asset_share=Decimal("0.40"),
            max_proposal_notional_usd=Decimal("5000000.00"),
            execution_window_days=5,
            price_tolerance=Decimal("0.02"),
            max_fee_share=Decimal("0.01"),
        )
        self.assets = {}
        for symbol, name, _base, _weight in ASSETS:
            self.assets[symbol] = Asset.objects.create(
                symbol=symbol,
                name=name,
                binance_symbol=f"{symbol}USDT",
                coingecko_id=name.lower().replace(" ", "-"),
            )
        self.fund.whitelisted_assets.add(*self.assets.values())
        self.sources = [
            FundingSource.objects.create(fund=self.fund, name=name, kind=kind)
            for name, kind in [
                ("Republican budget allocation", FundingSource.Kind.BUDGET_ALLOCATION),
                ("Seized digital assets", FundingSource.Kind.SEIZED_ASSETS),
                ("State mining revenue", FundingSource.Kind.MINING_REVENUE),
            ]
        ]
        password = make_password(PASSWORD)
        self.people: dict[str, list] = {}
        self.devices: dict[int, str] = {}
        user_model = get_user_model()
        for prefix, role, count in PEOPLE:
            self.people[prefix] = []
            for n in range(1, count + 1):
                user = user_model.objects.create(
                    username=f"{prefix}{n}", email=f"{prefix}{n}@alem.example", password=password
                )
                services.role_grant(user=user, fund=self.fund, role=role)
                device = TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=True)
                self.devices[user.pk] = device.persistent_id
                self.people[prefix].append(user)
        admins = self.people["fundadmin"]
        policy = services.policy_draft(
            actor=admins[0],
            fund=self.fund,
            note="Initial policy",
            stages=[
                StageSpec(1, "Risk review", FundRole.REVIEW_RISK, 1),
                StageSpec(2, "Investment committee", FundRole.VOTE_COMMITTEE, 2),
                StageSpec(
                    3, "Ministry sign-off", FundRole.APPROVE_MINISTRY, 1, Decimal("1000000.00")
                ),
            ],
        )
        self.policy = services.policy_publish(actor=admins[1], policy_id=policy.pk)
        self.stages = {stage.order: stage for stage in self.policy.stages.all()}
        self.summary["people"] = {prefix: len(users) for prefix, users in self.people.items()}

    def contributions(self, total: Decimal) -> None:
        """Cash from the three sources: a quarter at the start, the rest every quarter."""
        from governance import services

        quarters = max(1, self.days // 91)
        first = (total / 4).quantize(Decimal("1"))
        rest = ((total - first) / quarters).quantize(Decimal("1"))
        moments = [self.start + dt.timedelta(hours=1)]
        moments += [self.start + dt.timedelta(days=91 * q + 1) for q in range(quarters)]
        for n, moment in enumerate(moments):
            services.opening_balance_record(
                fund=self.fund,
                funding_source=self.sources[n % len(self.sources)],
                amount_usd=first if n == 0 else rest,
                memo=f"Tranche {n + 1}",
                booked_at=min(moment, self.now - dt.timedelta(days=1)),
            )
        self.summary["contributions_usd"] = str(first + rest * quarters)

    # -- market data (COPY) -------------------------------------------------------------------

    def prices(self) -> None:
        """Yahoo daily closes, Binance (USDT) and CoinGecko (USD) every ``step`` minutes: about
        PRICES x size rows; then one fresh quote of each source still quoting, as the minute
        fetch leaves them."""
        from portfolio.models import FxRate, Price

        per_asset_day = PRICES * self.size / (len(ASSETS) * self.days)
        per_source_day = max(1.0, (per_asset_day - 1) / 2)
        step = dt.timedelta(minutes=max(1, round(1440 / per_source_day)))
        price_rows = 0
        fetched = self.now
        with copy_into(Price) as write:
            for symbol, _name, _base, _weight in ASSETS:
                asset_id = self.assets[symbol].pk
                closes = self.paths.closes[symbol]
                for source, quote, spread in (
                    ("binance", "USDT", 1.0),
                    ("coingecko", "USD", 1.0004),
                    ("yahoo", "USD", 0.9998),
                ):
                    stop = self.now - dt.timedelta(days=STOPPED.get((symbol, source), 0))
                    moment = self.start
                    daily = source == "yahoo"
                    while moment < stop:
                        day = self.paths.day_index(moment)
                        following = closes[min(day + 1, self.days)]
                        within = (moment - self.start - dt.timedelta(days=day)) / dt.timedelta(
                            days=1
                        )
                        value = (closes[day] * (1 - within) + following * within) * spread
                        write(
                            {
                                "asset_id": asset_id,
                                "source": source,
                                "quote_currency": quote,
                                "price": price_text(value),
                                "observed_at": moment,
                                "fetched_at": fetched,
                            }
                        )
                        price_rows += 1
                        moment += dt.timedelta(days=1) if daily else step
        with copy_into(FxRate) as write:
            for day in range(self.days + 1):
                date = (self.start + dt.timedelta(days=day)).date()
                if date.weekday() < 5:
                    write({"rate": money(self.paths.kzt[day]), "date": date, "source": "nbk"})
        self.fresh_quotes()
        analyze(Price)
        analyze(FxRate)
        self.summary["prices"] = Price.objects.count()
        self.summary["price_step_minutes"] = int(step.total_seconds() // 60)
        say(f"{price_rows:,} prices of history ({step} apart), rates and fresh quotes")

    def fresh_quotes(self) -> None:
        from django.utils import timezone

        from portfolio.models import Price

        now = timezone.now()
        rows = []
        for symbol, asset in self.assets.items():
            value = self.paths.closes[symbol][-1]
            for source, quote in (("binance", "USDT"), ("coingecko", "USD")):
                if (symbol, source) not in STOPPED:
                    rows.append(
                        Price(
                            asset=asset,
                            source=source,
                            quote_currency=quote,
                            price=price_text(value),
                            observed_at=now,
                        )
                    )
        Price.objects.bulk_create(rows)

    # -- the subset through the services ------------------------------------------------------

    def otp(self, user) -> str:
        """A code the user's device accepts now (the test suite's way: the device forgets the
        last step it accepted, as if the next one had come)."""
        from django_otp.oath import TOTP
        from django_otp.plugins.otp_totp.models import TOTPDevice

        device = TOTPDevice.objects.get(user=user, confirmed=True)
        TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1)
        token = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()
        return f"{token:0{device.digits}d}"

    def through_services(self, count: int) -> list[int]:
        """``count`` proposals, one life of each kind in turn, through the services now."""
        from django.utils import timezone

        from governance import services

        lives = [
            "executed",
            "in_review_1",
            "in_review_2",
            "rejected",
            "changes_requested",
            "withdrawn",
            "approved",
            "draft",
            "in_review_3",
            "executed_twice",
        ]
        made = []
        self.fresh_quotes()
        for n in range(count):
            life = lives[n % len(lives)]
            symbol = ["BNB", "BTC", "ETH", "SOL", "TON"][n % 5]
            price = price_text(self.paths.closes[symbol][-1])
            large = life in ("in_review_3", "executed_twice") or n % 3 == 0
            notional = money(
                self.rng.uniform(1.0e6, 4.5e6) if large else self.rng.uniform(1e5, 9e5)
            )
            author = self.people["manager"][n % 5]
            proposal = services.proposal_create(
                author=author,
                fund=self.fund,
                asset=self.assets[symbol],
                notional_usd=notional,
                limit_price_usd=price_text(float(price) * 1.1),
                rationale=f"Benchmark subset #{n}: {life.replace('_', ' ')}.",
                funding_source=self.sources[n % len(self.sources)],
            )
            made.append(proposal.pk)
            if life == "draft":
                continue
            if life == "withdrawn":
                services.proposal_withdraw(proposal_id=proposal.pk, actor=author, reason="Bench")
                continue
            services.proposal_submit(proposal_id=proposal.pk, actor=author)
            if life == "in_review_1":
                continue
            risk = self.people["risk"][n % 6]
            verdict = {"rejected": "reject", "changes_requested": "request_changes"}.get(
                life, "approve"
            )
            self.decide_now(proposal.pk, risk, verdict)
            if verdict != "approve" or life == "in_review_2":
                continue
            for k in range(2):
                self.decide_now(proposal.pk, self.people["committee"][(n + k) % 9], "approve")
            if large and life != "in_review_3":
                self.decide_now(proposal.pk, self.people["ministry"][n % 5], "approve")
            if life in ("approved", "in_review_3"):
                continue
            fills = 2 if life == "executed_twice" else 1
            for k in range(fills):
                spend = notional * Decimal("0.99") / fills
                fee = (spend * Decimal("0.001")).quantize(Decimal("0.01"))
                services.execution_record(
                    proposal_id=proposal.pk,
                    actor=self.people["treasury"][n % 3],
                    quantity=((spend - fee) / price).quantize(Decimal("1e-8")),
                    price_usd=price,
                    fee_usd=fee,
                    venue="Binance",
                    external_ref=f"BENCH-SUBSET-{proposal.pk}-{k}",
                    executed_at=timezone.now(),
                    otp_token=self.otp(self.people["treasury"][n % 3]),
                    close=k == fills - 1,
                )
        return made

    def decide_now(self, proposal_id: int, user, verdict: str) -> None:
        from governance import services

        services.decision_record(
            proposal_id=proposal_id, user=user, verdict=verdict, otp_token=self.otp(user)
        )

    def templates(self, subset: list[int]) -> None:
        """What the services wrote for the subset, copied into the bulk-written proposals: the
        stored compliance reports (at submission and at the final approval) and the evidence
        of a decision and of a fill."""
        from governance.models import Decision, Execution, Proposal

        mine = Proposal.objects.filter(pk__in=subset)
        self.submitted_report = mine.filter(state="in_review").first().compliance
        self.final_report = mine.filter(state__in=["approved", "executed"]).first().compliance
        self.decision_evidence = Decision.objects.filter(proposal__in=mine).first().evidence
        self.fill_evidence = Execution.objects.filter(proposal__in=mine).first().evidence

    # -- the mass (planned here, written by COPY) ---------------------------------------------

    def plan_counts(self, count: int) -> dict[str, int]:
        counts = {life: int(count * share) for life, share in LIVES.items()}
        minimum = {1: 6, 2: 9, 3: 5}  # deciders per stage
        waiting = {
            stage: max(round(counts["in_review"] * share), minimum[stage] * MIN_WAITING_PER_DECIDER)
            for stage, share in IN_REVIEW_STAGES.items()
        }
        counts["in_review"] = sum(waiting.values())
        counts["executed"] += count - sum(counts.values())
        if counts["executed"] < 0:
            raise SystemExit(f"{count} proposals are too few for the deciders' queues")
        self.waiting = waiting
        return counts

    def mass(self, count: int) -> None:

        from governance.models import AuditEvent, Decision, Execution, Proposal
        from portfolio.models import LedgerEntry

        plan = Plan(self, first_ids={m: next_id(m) for m in (Proposal, Decision, Execution)})
        plan.next_ledger_id = next_id(LedgerEntry)
        counts = self.plan_counts(count)
        kinds = [life for life, n in counts.items() for _ in range(n)]
        self.rng.shuffle(kinds)
        starts = sorted((plan.created_at(kind), kind) for kind in kinds)
        stage_of = []
        for stage, n in self.waiting.items():
            stage_of += [stage] * n
        self.rng.shuffle(stage_of)
        for moment, kind in starts:
            stage = stage_of.pop() if kind == "in_review" else None
            plan.live(kind, moment, stage)
        say(
            f"planned {count:,} proposals: "
            + ", ".join(f"{n:,} {life}" for life, n in counts.items())
        )
        copy_rows(Proposal, plan.proposals)
        copy_rows(Decision, plan.decisions)
        copy_rows(Execution, plan.executions)
        copy_rows(LedgerEntry, plan.ledger)
        for model in (Proposal, Decision, Execution, LedgerEntry):
            reset_sequence(model)
            analyze(model)
        say(
            f"wrote {len(plan.proposals):,} proposals, {len(plan.decisions):,} decisions, "
            f"{len(plan.executions):,} fills, {len(plan.ledger):,} ledger entries"
        )
        appended = plan.write_events()
        analyze(AuditEvent)
        say(f"wrote {appended:,} audit events, chained and sealed")
        self.summary["by_state"] = dict(
            Proposal.objects.values_list("state").annotate(n=models_count()).order_by("state")
        )
        self.summary["waiting_by_stage"] = {str(k): v for k, v in self.waiting.items()}

    def spend_estimate(self, count: int) -> Decimal:
        """What the fills of ``count`` planned proposals will cost at most, to size the cash."""
        mean_notional = 0.7 * 525_000 + 0.3 * 2_750_000
        spending = LIVES["executed"] + LIVES["approved"] / 2
        return money(count * spending * mean_notional, "1")

    # -- NAV history (services) ---------------------------------------------------------------

    def nav_history(self) -> None:
        from django.utils import timezone

        from portfolio.services import nav_snapshot_take

        today = timezone.localdate()
        first = timezone.localdate(self.start) + dt.timedelta(days=1)
        day, taken = first, 0
        while day <= today:
            nav_snapshot_take(fund=self.fund, day=day)
            day += dt.timedelta(days=1)
            taken += 1
        self.summary["nav_snapshots"] = taken
        say(f"{taken:,} NAV snapshots taken ({first} to {today})")


def models_count():
    from django.db.models import Count

    return Count("id")


class Plan:
    """The lives of the bulk-written proposals: their rows, and their audit events as steps
    replayed in time order through the application's event writers."""

    def __init__(self, builder: Builder, *, first_ids: dict):
        from governance.models import Decision, Execution, Proposal

        self.b = builder
        self.rng = builder.rng
        self.ids = {Proposal: first_ids[Proposal], Decision: first_ids[Decision]}
        self.ids[Execution] = first_ids[Execution]
        self.proposals: list[dict] = []
        self.decisions: list[dict] = []
        self.executions: list[dict] = []
        self.ledger: list[dict] = []
        self.steps: list[tuple] = []
        self.weights = [weight for *_rest, weight in ASSETS]

    def take_id(self, model) -> int:
        value = self.ids[model]
        self.ids[model] += 1
        return value

    def created_at(self, kind: str) -> dt.datetime:
        now, start, days = self.b.now, self.b.start, dt.timedelta(days=1)
        u = self.rng.uniform
        if kind in ("executed", "rejected", "withdrawn", "expired"):
            low, high = start + 2 * days, now - 12 * days
            if high <= low:
                high = low + days
            return low + (high - low) * self.rng.random()
        window = {
            "approved": (3, 4.5),
            "in_review": (7, 25),
            "changes_requested": (5, 30),
            "draft": (1, 60),
        }[kind]
        return now - days * u(*window)

    # -- one life -----------------------------------------------------------------------------

    def live(self, kind: str, created: dt.datetime, stage: int | None) -> None:
        b, rng = self.b, self.rng
        quiet = kind in ("executed", "rejected", "withdrawn", "expired")
        while True:
            symbol = rng.choices([a[0] for a in ASSETS], weights=self.weights)[0]
            if quiet or symbol not in QUIET_ASSETS:
                break
        large = rng.random() < 0.3 or stage == 3
        if stage in (1, 2) and rng.random() < 0.5:
            large = False
        notional = money(
            round(rng.uniform(1.0e6, 4.5e6) if large else rng.uniform(5e4, 9.99e5), -3)
        )
        price = b.paths.at(symbol, created)
        life = Life(self, kind, created, symbol, notional, price_text(price * 1.08))
        gap = (0.5, 6) if kind == "approved" else (1, 16) if kind != "executed" else (1, 30)
        life.gap = gap
        if kind == "draft":
            life.finish()
            return
        if kind == "withdrawn" and rng.random() < 0.4:
            life.withdraw()
            life.finish()
            return
        if rng.random() < 0.08 and kind in ("executed", "in_review", "rejected"):
            life.submit()
            life.decide(1, "request_changes")
            life.resubmit()
        else:
            life.submit()
        if kind == "changes_requested":
            life.decide(1, "request_changes")
        elif kind == "rejected":
            if rng.random() < 0.6:
                life.decide(1, "reject")
            else:
                life.decide(1, "approve")
                life.decide(2, "reject")
        elif kind == "in_review":
            life.approve_until(stage)
        elif kind == "withdrawn":
            if rng.random() < 0.5:
                life.decide(1, "approve")
                life.withdraw()
            else:
                life.approve_until(None)
                life.withdraw()
        else:
            life.approve_until(None)
            if kind == "expired":
                life.expire()
            elif kind == "approved":
                if rng.random() < 0.4:
                    life.fill(close=False, share=Decimal("0.4"))
            else:
                fills = rng.choice((1, 1, 2, 3))
                for n in range(fills):
                    life.fill(close=n == fills - 1, share=Decimal("0.99") / fills)
        life.finish()

    # -- the audit events ---------------------------------------------------------------------

    def preloaded_rows_json(self):
        """``governance.records.rows_json`` for the rows written here, read back in one query
        per model rather than one per event (the same snapshots: ``records.snapshot`` of what
        the database returns); any other row is read as the original reads it."""
        from governance import records
        from governance.models import Decision, Execution
        from portfolio.models import LedgerEntry

        original = records.rows_json
        cache = {}
        for model, rows in (
            (Decision, self.decisions),
            (Execution, self.executions),
            (LedgerEntry, self.ledger),
        ):
            if not rows:
                continue
            label = model._meta.label_lower
            mine = model.objects.filter(id__gte=min(row["id"] for row in rows))
            for values in mine.values("id", *records.RECORDED[label]).iterator(chunk_size=5000):
                cache[(label, values["id"])] = records.snapshot(label, values)

        def rows_json(*objs) -> list[dict]:
            by_label: dict[str, list] = {}
            for obj in objs:
                by_label.setdefault(obj._meta.label_lower, []).append(obj)
            found = []
            for label, group in by_label.items():
                if all((label, obj.pk) in cache for obj in group):
                    found += [cache[(label, pk)] for pk in sorted(obj.pk for obj in group)]
                else:
                    found += original(*group)
            return found

        return rows_json

    def write_events(self) -> int:
        """Replay every step in time order through ``governance.events`` (collected, not
        written), then hash the events onto the chain and COPY them."""
        from django.db import transaction

        from governance import events
        from governance.audit import event_digest, event_hash, head_seal, normalise_payload
        from governance.models import AuditChain, AuditEvent

        collected: list[dict] = []
        clock = {"now": None}

        def collect(*, action, actor=None, fund=None, proposal=None, payload=None):
            collected.append(
                {
                    "created_at": clock["now"],
                    "actor_id": actor.pk if actor is not None else None,
                    "action": action,
                    "fund_id": fund.pk if fund is not None else getattr(proposal, "fund_id", None),
                    "proposal_id": proposal.pk if proposal is not None else None,
                    "payload": normalise_payload(payload),
                }
            )

        original = events.audit_record, events.rows_json
        events.audit_record, events.rows_json = collect, self.preloaded_rows_json()
        try:
            self.steps.sort(key=lambda step: (step[0], step[1], step[2]))
            for moment, _proposal, _n, step in self.steps:
                clock["now"] = moment
                step()
        finally:
            events.audit_record, events.rows_json = original

        with transaction.atomic():
            chain = AuditChain.objects.select_for_update().get(pk=1)
            previous, sequence = chain.head_hash, chain.length
            previous_digest = chain.head_digest
            with copy_into(AuditEvent) as write:
                for event in collected:
                    sequence += 1
                    keyed = event_hash(previous_hash=previous, sequence=sequence, **event)
                    digest = event_digest(
                        previous_digest=previous_digest, sequence=sequence, **event
                    )
                    write(
                        {
                            **event,
                            "sequence": sequence,
                            "previous_hash": previous,
                            "hash": keyed,
                            "previous_digest": previous_digest,
                            "digest": digest,
                        }
                    )
                    previous, previous_digest = keyed, digest
            chain.length, chain.head_hash = sequence, previous
            chain.head_digest = previous_digest
            chain.seal = head_seal(sequence, previous)
            chain.save(update_fields=["length", "head_hash", "head_digest", "seal"])
        return len(collected)


class Life:
    """One bulk-written proposal from creation to where its life ends: its row, decisions,
    fills and ledger entries, and the steps that write its audit events."""

    def __init__(self, plan: Plan, kind, created, symbol, notional, limit_price):
        from governance.models import Proposal

        b = plan.b
        self.plan, self.b, self.rng = plan, b, plan.rng
        self.t = created
        self.symbol = symbol
        self.author = self.rng.choice(b.people["manager"])
        self.pk = plan.take_id(Proposal)
        self.steps = 0
        self.version = 1
        self.state = "draft"
        self.stage: int | None = None
        self.applicable = [o for o, s in b.stages.items() if s.applies_from_usd <= notional]
        self.approvals: dict[int, list] = {}
        self.deciders: set[int] = set()
        self.row = {
            "id": self.pk,
            "fund_id": b.fund.pk,
            "asset_id": b.assets[symbol].pk,
            "kind": "buy",
            "notional_usd": notional,
            "limit_price_usd": limit_price,
            "rationale": f"Build the strategic {symbol} position within the mandate.",
            "funding_source_id": self.rng.choice(b.sources).pk,
            "author_id": self.author.pk,
            "state": "draft",
            "version": 1,
            "policy_id": None,
            "current_stage_id": None,
            "compliance": {},
            "executed_notional_usd": Decimal("0"),
            "created_at": created,
            "updated_at": created,
            "submitted_at": None,
            "decided_at": None,
            "approval_expires_at": None,
        }
        # The proposal as the event writers see it at each step (its version, executed
        # notional and expiry change as the steps replay).
        self.live = Proposal(
            id=self.pk,
            fund=b.fund,
            asset=b.assets[symbol],
            notional_usd=notional,
            limit_price_usd=limit_price,
            rationale=self.row["rationale"],
            funding_source_id=self.row["funding_source_id"],
            author=self.author,
            state="draft",
            version=1,
            executed_notional_usd=Decimal("0"),
        )
        self.live.funding_source = next(
            s for s in b.sources if s.pk == self.row["funding_source_id"]
        )
        self.step(lambda: self.events.proposal_created_event(actor=self.author, proposal=self.live))

    @property
    def events(self):
        from governance import events

        return events

    def step(self, write, *, at: dt.datetime | None = None) -> None:
        self.plan.steps.append((at or self.t, self.pk, self.steps, write))
        self.steps += 1

    def advance(self) -> dt.datetime:
        self.t += dt.timedelta(hours=self.rng.uniform(*self.gap))
        return self.t

    # -- the author ---------------------------------------------------------------------------

    def submit(self) -> None:
        b = self.b
        self.advance()
        self.state, self.stage = "in_review", self.applicable[0]
        self.approvals = {}
        self.deciders = set()
        self.row.update(
            state="in_review",
            version=self.version,
            policy_id=b.policy.pk,
            submitted_at=self.t,
            compliance={**b.submitted_report, "checked_at": self.t.isoformat()},
        )
        version = self.version
        stages = [b.stages[o] for o in self.applicable]

        def write():
            self.live.version = version
            self.live.policy = b.policy
            outcome = b.submitted_report.get("outcome", "pass")
            self.events.proposal_submitted_event(
                actor=self.author, proposal=self.live, stages=stages, compliance_outcome=outcome
            )

        self.step(write)

    def resubmit(self) -> None:
        self.version += 1
        self.submit()

    def withdraw(self) -> None:
        self.advance()
        from_state, version = self.state, self.version
        self.state, self.stage = "withdrawn", None
        self.row.update(state="withdrawn", approval_expires_at=None)

        def write():
            self.live.version = version
            self.events.proposal_withdrawn_event(
                actor=self.author, proposal=self.live, from_state=from_state, reason="Bench"
            )

        self.step(write)

    # -- the deciders -------------------------------------------------------------------------

    def decide(self, order: int, verdict: str) -> None:
        from governance.models import Decision

        b, rng = self.b, self.rng
        stage = b.stages[order]
        prefix = {1: "risk", 2: "committee", 3: "ministry"}[order]
        user = rng.choice([u for u in b.people[prefix] if u.pk not in self.deciders])
        self.deciders.add(user.pk)
        self.advance()
        evidence = dict(b.decision_evidence)
        if "stage" in evidence:
            evidence["stage"] = {"order": order, "name": stage.name, "quorum": stage.quorum}
        if "roles" in evidence:
            evidence["roles"] = [stage.permission]
        row = {
            "id": self.plan.take_id(Decision),
            "proposal_id": self.pk,
            "proposal_version": self.version,
            "stage_id": stage.pk,
            "user_id": user.pk,
            "proposal_author_id": self.author.pk,
            "verdict": verdict,
            "comment": "" if verdict == "approve" else "Outside the risk appetite.",
            "evidence": evidence,
            "confirmed_by_device": b.devices[user.pk],
            "created_at": self.t,
            "voided_at": None,
        }
        self.plan.decisions.append(row)
        version = self.version

        def write_decision():
            self.live.version = version
            decision = Decision(
                id=row["id"],
                proposal=self.live,
                proposal_version=version,
                stage=stage,
                user=user,
                proposal_author_id=self.author.pk,
                verdict=verdict,
                comment=row["comment"],
                confirmed_by_device=row["confirmed_by_device"],
            )
            self.events.decision_recorded_event(decision=decision)

        self.step(write_decision)
        if verdict == "reject":
            self.state, self.stage = "rejected", None
            self.row.update(state="rejected", decided_at=self.t)
            self.step(
                lambda: self.events.proposal_rejected_event(
                    actor=user, proposal=self.live, stage=stage
                )
            )
        elif verdict == "request_changes":
            self.state, self.stage = "changes_requested", None
            self.row.update(state="changes_requested")
            self.step(
                lambda: self.events.proposal_changes_requested_event(
                    actor=user, proposal=self.live, stage=stage
                )
            )
        else:
            self.approvals.setdefault(order, []).append(user.pk)
            if len(self.approvals[order]) >= stage.quorum:
                self.complete(order, user)

    def complete(self, order: int, user) -> None:
        b = self.b
        stage = b.stages[order]
        following = [o for o in self.applicable if o > order]
        if following:
            self.stage = following[0]
            next_stage = b.stages[self.stage]
            self.step(
                lambda: self.events.proposal_stage_completed_event(
                    actor=user, proposal=self.live, stage=stage, next_stage=next_stage
                )
            )
            return
        self.state, self.stage = "approved", None
        expires = self.t + dt.timedelta(days=b.fund.execution_window_days)
        self.row.update(
            state="approved",
            decided_at=self.t,
            approval_expires_at=expires,
            compliance={**b.final_report, "checked_at": self.t.isoformat()},
        )

        def write():
            self.live.approval_expires_at = expires
            outcome = b.final_report.get("outcome", "pass")
            self.events.proposal_approved_event(
                actor=user, proposal=self.live, stage=stage, compliance_outcome=outcome
            )

        self.step(write)

    def approve_until(self, stage: int | None) -> None:
        """Approve stage after stage until ``stage`` is current (one committee approval of
        two given half the time), or to the end (None)."""
        for order in list(self.applicable):
            if stage is not None and order == stage:
                if order == 2 and self.rng.random() < 0.5:
                    self.decide(2, "approve")
                return
            quorum = self.b.stages[order].quorum
            for _ in range(quorum):
                self.decide(order, "approve")

    # -- the treasury and the clock -----------------------------------------------------------

    def fill(self, *, close: bool, share: Decimal) -> None:
        from governance.models import Execution
        from portfolio.models import LedgerEntry

        b, rng = self.b, self.rng
        self.t += dt.timedelta(hours=rng.uniform(2, 28))
        treasury = rng.choice(b.people["treasury"])
        price = price_text(b.paths.at(self.symbol, self.t) * rng.uniform(0.998, 1.002))
        price = min(price, self.row["limit_price_usd"])
        with localcontext(prec=60):
            quantity = (self.row["notional_usd"] * share / price).quantize(Decimal("1e-8"))
            gross = quantity * price
            fee = (gross * Decimal("0.001")).quantize(Decimal("0.01"))
            cost = gross + fee
        execution_id = self.plan.take_id(Execution)
        row = {
            "id": execution_id,
            "proposal_id": self.pk,
            "quantity": quantity,
            "price_usd": price,
            "fee_usd": fee,
            "cost_usd": cost,
            "venue": rng.choice(("Binance", "Kraken", "OTC desk")),
            "external_ref": f"BENCH-{self.pk}-{execution_id}",
            "executed_at": self.t,
            "recorded_by_id": treasury.pk,
            "recorded_at": self.t + dt.timedelta(minutes=3),
            "evidence": dict(b.fill_evidence),
            "confirmed_by_device": b.devices[treasury.pk],
        }
        self.plan.executions.append(row)
        common = {
            "fund_id": b.fund.pk,
            "funding_source_id": None,
            "memo": "",
            "booked_at": self.t,
            "booked_by_id": treasury.pk,
        }
        entries = [
            {
                "kind": "buy",
                "asset_id": b.assets[self.symbol].pk,
                "quantity": quantity,
                "value_usd": gross,
                "reference": f"execution:{execution_id}:asset",
            },
            {
                "kind": "buy",
                "asset_id": None,
                "quantity": -gross,
                "value_usd": -gross,
                "reference": f"execution:{execution_id}:cash",
            },
        ]
        if fee:
            entries.append(
                {
                    "kind": "fee",
                    "asset_id": None,
                    "quantity": -fee,
                    "value_usd": -fee,
                    "reference": f"execution:{execution_id}:fee",
                }
            )
        for entry in entries:
            entry.update(common, id=self.plan.next_ledger_id)
            self.plan.next_ledger_id += 1
            self.plan.ledger.append(entry)
        with localcontext(prec=60):
            executed = self.row["executed_notional_usd"] + cost
        self.row["executed_notional_usd"] = executed

        def write_fill():
            self.live.executed_notional_usd = executed
            execution = Execution(
                id=execution_id,
                proposal=self.live,
                recorded_by=treasury,
                **{k: row[k] for k in ("quantity", "price_usd", "fee_usd", "cost_usd")},
                **{k: row[k] for k in ("venue", "external_ref", "executed_at")},
                confirmed_by_device=row["confirmed_by_device"],
            )
            ledger = [LedgerEntry(id=entry["id"]) for entry in entries]
            self.events.execution_recorded_event(execution=execution, entries=ledger)

        self.step(write_fill)
        if close:
            self.state = "executed"
            self.row["state"] = "executed"
            self.step(
                lambda: self.events.proposal_executed_event(
                    actor=treasury, proposal=self.live, reason="closed with the fill"
                )
            )

    def expire(self) -> None:
        expires = self.row["approval_expires_at"]
        self.state, self.t = "expired", expires
        self.row["state"] = "expired"
        self.step(lambda: self.events.proposal_expired_event(proposal=self.live), at=expires)

    def finish(self) -> None:
        self.row["updated_at"] = self.t
        if self.state == "in_review":
            self.row["current_stage_id"] = self.b.stages[self.stage].pk
            self.row["stage_opened_at"] = self.t
        self.plan.proposals.append(self.row)


# ---------------------------------------------------------------------------------------------
# COPY and sequences
# ---------------------------------------------------------------------------------------------


class copy_into:  # noqa: N801 (used as a context manager, like open)
    """``with copy_into(Model) as write: write({attname: value, ...})``: rows by COPY, every
    concrete column given (a missing one takes the field's default; ``id`` from its identity
    when absent from every row)."""

    def __init__(self, model, *, with_id: bool | None = None):
        self.model = model
        self.with_id = with_id

    def __enter__(self):
        from django.core.serializers.json import DjangoJSONEncoder
        from django.db import connection, models

        fields = [f for f in self.model._meta.concrete_fields if not f.primary_key]
        self._fields = fields
        self._json = {f.attname for f in fields if isinstance(f, models.JSONField)}
        self._encoder = DjangoJSONEncoder
        self._cursor = connection.cursor()
        self._started = False
        self._connection = connection
        return self.write

    def _begin(self, with_id: bool):
        columns = (["id"] if with_id else []) + [f.column for f in self._fields]
        names = ", ".join(f'"{c}"' for c in columns)
        table = self.model._meta.db_table
        self._copy_cm = self._cursor.cursor.copy(f'COPY "{table}" ({names}) FROM STDIN')
        self._copy = self._copy_cm.__enter__()
        self._with_id = with_id
        self._started = True

    def write(self, row: dict) -> None:
        if not self._started:
            self._begin("id" in row if self.with_id is None else self.with_id)
        values = [row["id"]] if self._with_id else []
        for f in self._fields:
            value = row[f.attname] if f.attname in row else f.get_default()
            if f.attname in self._json:
                value = json.dumps(value, cls=self._encoder)
            values.append(value)
        self._copy.write_row(values)

    def __exit__(self, *exc_info):
        try:
            if self._started:
                self._copy_cm.__exit__(*exc_info)
        finally:
            self._cursor.close()
        return False


def copy_rows(model, rows: list[dict]) -> None:
    with copy_into(model) as write:
        for row in rows:
            write(row)


def next_id(model) -> int:
    from django.db.models import Max

    return (model.objects.aggregate(top=Max("id"))["top"] or 0) + 1


def analyze(model) -> None:
    """Fresh planner statistics after a bulk write, as autovacuum would gather them soon: the
    next steps (the services, the NAV snapshots) then read through the same plans as a
    deployment's database would."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f'ANALYZE "{model._meta.db_table}"')


def reset_sequence(model) -> None:
    """After rows written with their ids: the identity continues after the largest."""
    from django.db import connection

    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
            f'GREATEST((SELECT MAX(id) FROM "{table}"), 1))'
        )


# ---------------------------------------------------------------------------------------------
# The child's whole build
# ---------------------------------------------------------------------------------------------


def child(size: float) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from governance.audit import audit_verification_run

    started = time.perf_counter()
    phases = {}

    def phase(name: str, began: float) -> float:
        phases[name] = round(time.perf_counter() - began, 1)
        say(f"{name}: {phases[name]} s")
        return time.perf_counter()

    call_command("migrate", verbosity=0, interactive=False)
    mark = phase("migrate", started)
    b = Builder(size)
    b.people_and_fund()
    mark = phase("fund, people, roles and policy (services)", mark)
    b.prices()
    mark = phase("prices and rates (COPY)", mark)
    subset = min(SUBSET_MAX, max(10, b.proposals // 100))
    b.contributions(b.spend_estimate(b.proposals) * Decimal("1.6") + Decimal("2000000000"))
    made = b.through_services(subset)
    b.templates(made)
    mark = phase(f"contributions and {subset} proposals (services)", mark)
    b.mass(b.proposals - subset)
    mark = phase(f"{b.proposals - subset:,} proposals (COPY, events replayed)", mark)
    b.nav_history()
    mark = phase("NAV history (services)", mark)
    verification = audit_verification_run()
    b.summary["audit_chain"] = {
        "ok": verification.ok,
        "events": verification.verified_count,
        "reason": verification.reason[:300],
    }
    mark = phase(f"audit chain verified ({'intact' if verification.ok else 'BROKEN'})", mark)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    phase("VACUUM ANALYZE", mark)
    b.summary["phases_seconds"] = phases
    print(json.dumps(b.summary, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1.0, help="1 = the real size")
    parser.add_argument("--name", help="database name (default: alem_bench_real[_SIZE])")
    parser.add_argument("--rebuild", action="store_true", help="build even if it matches")
    add_database_arguments(parser)
    args = parser.parse_args()
    if args.size <= 0:
        parser.error("--size must be above 0")
    if args.child:
        child(args.size)
        return
    label = ensure(args.size, name=args.name, rebuild=args.rebuild)
    states = ", ".join(f"{n:,} {state}" for state, n in label.get("by_state", {}).items())
    chain = label.get("audit_chain", {})
    print(
        f"dataset {label['name']}: {label.get('proposals', 0):,} proposals ({states}); "
        f"{label.get('prices', 0):,} prices; {label.get('nav_snapshots', 0):,} NAV days; audit "
        f"chain of {chain.get('events', 0):,} events {'intact' if chain.get('ok') else 'BROKEN'}; "
        f"built in {label.get('build_seconds')} s"
    )


if __name__ == "__main__":
    main()
