"""Demo data: both funds, their users and roles, policies, cash and real price history.

Every demo user gets a confirmed authenticator (TOTP device); their otpauth:// URIs are
printed and written to ``var/demo-otp.txt``, to add to an authenticator app, and
``manage.py otp_code USERNAME`` shows a user's current code while DEBUG is on.

Idempotent: running it again adds nothing that is already there (devices and their keys
included, so an app set up once keeps working).
"""

import datetime as dt
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance.audit import audit_verification_run
from governance.policies import StageSpec
from governance.selectors import policy_in_force
from governance.services import opening_balance_record, policy_draft, policy_publish, role_grant
from portfolio.disclosure import Disclosure, disclosures_refresh
from portfolio.models import Asset, CustodyAccount, Fund, FundingSource, FundRole, LedgerEntry
from portfolio.prices.selectors import consensus_for
from portfolio.prices.services import parse_daily_closes, price_history_import
from portfolio.services import end_of_day, nav_snapshot_take

OTP_FILE_NAME = "demo-otp.txt"
PRICE_DIR = Path(__file__).resolve().parents[3] / "portfolio" / "data" / "prices"
DEFAULT_PASSWORD = "alem-demo-2026"
# The opening contributions are dated here, so the NAV history spans the real price history.
OPENING_DAY = dt.date(2025, 12, 1)
# The NAV history seeded ends today and is at most this many days long, so seeding costs the
# same next year as today (the charts show a year; older days are not valued).
NAV_HISTORY_DAYS = 400

ASSETS = [
    # symbol, name, chain, Binance pair, CoinGecko id, peg
    ("BNB", "BNB", "BNB Smart Chain", "BNBUSDT", "binancecoin", ""),
    ("BTC", "Bitcoin", "Bitcoin", "BTCUSDT", "bitcoin", ""),
    ("ETH", "Ether", "Ethereum", "ETHUSDT", "ethereum", ""),
    ("SOL", "Solana", "Solana", "SOLUSDT", "solana", ""),
    ("KZTE", "Tenge stablecoin", "Solana", "", "", "KZT"),
]

R = FundRole
USERS_BY_ROLE = [
    ("manager", R.PROPOSE),
    ("risk", R.REVIEW_RISK),
    ("committee1", R.VOTE_COMMITTEE),
    ("committee2", R.VOTE_COMMITTEE),
    ("committee3", R.VOTE_COMMITTEE),
    ("ministry", R.APPROVE_MINISTRY),
    ("treasury", R.EXECUTE_TRADES),
    ("auditor", R.AUDIT),
    ("fundadmin", R.MANAGE_POLICY),
]

FUNDS = [
    {
        "slug": "alem",
        "prefix": "",
        # Public pages from the start (/public/alem/), 30 days behind, deciders not named.
        "disclosure": Disclosure(
            disclose_holdings=True, disclosure_delay_days=30, disclose_deciders=False
        ),
        "name": "Alem Crypto Fund",
        "limits": {
            "max_asset_share": Decimal("0.40"),
            "max_proposal_notional_usd": Decimal("5000000.00"),
            "execution_window_days": 5,
            "price_tolerance": Decimal("0.02"),
            "max_fee_share": Decimal("0.01"),
        },
        "whitelist": ["BNB", "BTC", "ETH"],
        "sources": [("Republican budget allocation", FundingSource.Kind.BUDGET_ALLOCATION)],
        "cash": [("Republican budget allocation", Decimal("25000000.00"))],
        "in_kind": [],
        # name, kind, chain, address, account reference
        "accounts": [
            (
                "BNB cold multisig",
                CustodyAccount.Kind.COLD_MULTISIG,
                "BNB Smart Chain",
                "0x4a1e5c0a3d1f2b8e9c7d6f5a4b3c2d1e0f9a8b7c",
                "",
            ),
            (
                "Exchange trading account",
                CustodyAccount.Kind.EXCHANGE,
                "BNB Smart Chain",
                "",
                "EX-ALEM-001",
            ),
        ],
        "stages": [
            StageSpec(1, "Risk review", R.REVIEW_RISK, 1),
            StageSpec(2, "Investment committee", R.VOTE_COMMITTEE, 2),
            StageSpec(3, "Ministry sign-off", R.APPROVE_MINISTRY, 1, Decimal("1000000.00")),
        ],
    },
    {
        "slug": "reserve",
        "prefix": "reserve_",
        "name": "National Digital Asset Reserve",
        "limits": {
            "max_asset_share": Decimal("0.70"),
            "max_proposal_notional_usd": Decimal("10000000.00"),
            "execution_window_days": 3,
            "price_tolerance": Decimal("0.015"),
            "max_fee_share": Decimal("0.005"),
        },
        "whitelist": ["BTC", "ETH"],
        "sources": [
            ("Seized digital assets", FundingSource.Kind.SEIZED_ASSETS),
            ("State mining revenue", FundingSource.Kind.MINING_REVENUE),
        ],
        "cash": [("State mining revenue", Decimal("8000000.00"))],
        "in_kind": [("Seized digital assets", "BTC", Decimal("120"))],
        "accounts": [
            (
                "BTC cold multisig",
                CustodyAccount.Kind.COLD_MULTISIG,
                "Bitcoin",
                "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
                "",
            ),
            (
                "BTC qualified custodian",
                CustodyAccount.Kind.QUALIFIED_CUSTODIAN,
                "Bitcoin",
                "",
                "QC-NDAR-7",
            ),
        ],
        "stages": [
            StageSpec(1, "Risk review", R.REVIEW_RISK, 1),
            StageSpec(2, "Investment committee", R.VOTE_COMMITTEE, 2),
            StageSpec(3, "Ministry sign-off", R.APPROVE_MINISTRY, 1, Decimal("500000.00")),
        ],
    },
]


class Command(BaseCommand):
    help = "Create the demo funds, users, roles, policies, cash and price history (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--password",
            help=f"Password for every demo user (default {DEFAULT_PASSWORD!r}); given "
            "explicitly, it is also reset on users that already exist.",
        )
        parser.add_argument(
            "--nav-days",
            type=int,
            default=NAV_HISTORY_DAYS,
            help=f"Days of end-of-day NAV to take, ending today (default {NAV_HISTORY_DAYS}; "
            f"none before {OPENING_DAY}; 0 takes none).",
        )

    def handle(self, *args, password=None, nav_days=NAV_HISTORY_DAYS, verbosity=1, **options):
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo only runs with DEBUG on: it creates users with the published demo "
                "password and prints their authenticators' secrets, which no deployment may have."
            )
        if nav_days < 0:
            raise CommandError(f"--nav-days must be 0 or more, not {nav_days}.")
        self.verbosity = verbosity
        user_model = get_user_model()
        with transaction.atomic():
            admin = self._user(user_model, "admin", password, superuser=True)
            # A second site administrator: widening who may act needs two (Admin changes).
            self._user(user_model, "admin2", password, superuser=True)
            assets = {symbol: self._asset(symbol, *rest) for symbol, *rest in ASSETS}
            for symbol, asset in assets.items():
                path = PRICE_DIR / f"{symbol}-USD.csv"
                if path.exists():
                    added = price_history_import(asset=asset, closes=parse_daily_closes(path))
                    self._say(f"{symbol}: {added} daily prices added")
            for spec in FUNDS:
                fund = self._fund(user_model, spec, assets, admin, password)
                self._nav_history(fund, days=nav_days)
        self._say(f"Public disclosures built: {disclosures_refresh()}")
        # The auditors' page shows the latest verification; the schedule runs one hourly.
        verification = audit_verification_run()
        self._say(f"Audit chain verified: {verification}")
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(
            "Users: admin and admin2 (site administrators), "
            f"{', '.join(u for u, _ in USERS_BY_ROLE)}, and the same "
            f"prefixed reserve_; password: {password or DEFAULT_PASSWORD!r}."
        )
        self._authenticators(user_model)

    def _authenticators(self, user_model) -> None:
        """A confirmed authenticator for every demo user, kept if there is one already; their
        otpauth:// URIs go to the screen and to ``var/demo-otp.txt``."""
        usernames = ["admin", "admin2"] + [
            spec["prefix"] + username for spec in FUNDS for username, _ in USERS_BY_ROLE
        ]
        lines = []
        with transaction.atomic():
            for user in user_model.objects.filter(username__in=usernames).order_by("pk"):
                device = TOTPDevice.objects.filter(user=user, confirmed=True).order_by(
                    "pk"
                ).first() or TOTPDevice.objects.create(
                    user=user, name="Authenticator", confirmed=True
                )
                lines.append(f"{user.username} {device.config_url}")
        path = Path(settings.VAR_DIR) / OTP_FILE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.stdout.write(
            "Authenticators (add a URI to an app, or run manage.py otp_code USERNAME with "
            f"DEBUG on); also written to {path}:"
        )
        for line in lines:
            self.stdout.write(f"  {line}")

    def _say(self, message: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(f"  {message}")

    def _user(self, user_model, username: str, password: str | None, *, superuser: bool = False):
        user, created = user_model.objects.get_or_create(
            username=username,
            defaults={"email": f"{username}@alem.example", "is_staff": superuser},
        )
        if superuser and not user.is_superuser:
            user.is_superuser = user.is_staff = True
            user.save(update_fields=["is_superuser", "is_staff"])
        if created or password:
            user.set_password(password or DEFAULT_PASSWORD)
            user.save(update_fields=["password"])
        return user

    def _asset(self, symbol, name, chain, binance_symbol, coingecko_id, peg) -> Asset:
        asset, _ = Asset.objects.get_or_create(
            symbol=symbol,
            defaults={
                "name": name,
                "chain": chain,
                "binance_symbol": binance_symbol,
                "coingecko_id": coingecko_id,
                "peg_currency": peg,
            },
        )
        return asset

    def _nav_history(self, fund: Fund, *, days: int) -> None:
        """End-of-day NAV for the charts: the last ``days`` days up to today, none before the
        opening day. A fund already valued today is left as it is."""
        today = timezone.localdate()
        if days == 0 or fund.nav_snapshots.filter(date=today).exists():
            return
        first = max(OPENING_DAY, today - dt.timedelta(days=days - 1))
        day = first
        while day <= today:
            nav_snapshot_take(fund=fund, day=day)
            day += dt.timedelta(days=1)
        self._say(f"{fund.name}: NAV history from {first} taken")

    def _fund(self, user_model, spec: dict, assets: dict, admin, password) -> Fund:
        fund, created = Fund.objects.get_or_create(
            slug=spec["slug"], defaults={"name": spec["name"], **spec["limits"]}
        )
        self._say(f"{fund.name}: {'created' if created else 'already there'}")
        fund.whitelisted_assets.add(*(assets[s] for s in spec["whitelist"]))
        sources = {
            name: FundingSource.objects.get_or_create(
                fund=fund, name=name, defaults={"kind": kind}
            )[0]
            for name, kind in spec["sources"]
        }
        users = {}
        for username, role in USERS_BY_ROLE:
            user = self._user(user_model, spec["prefix"] + username, password)
            role_grant(user=user, fund=fund, role=role)
            users[username] = user
        # The site administrator is the second pair of eyes on policy changes in the demo.
        role_grant(user=admin, fund=fund, role=R.MANAGE_POLICY)

        if policy_in_force(fund) is None:
            policy = policy_draft(
                actor=users["fundadmin"],
                fund=fund,
                stages=spec["stages"],
                note="Initial policy",
                disclosure=spec.get("disclosure"),
            )
            policy_publish(actor=admin, policy_id=policy.pk)

        opened_at = end_of_day(OPENING_DAY - dt.timedelta(days=1))
        # The demo's custody accounts were in use before Alem kept the books, as its opening
        # balances were held: they are set up here, not through the four-eyes change requests
        # (governance.services.custody) every later account goes through.
        accounts = {}
        for name, kind, chain, address, reference in spec["accounts"]:
            accounts[chain] = (
                accounts.get(chain)
                or CustodyAccount.objects.get_or_create(
                    fund=fund,
                    name=name,
                    defaults={
                        "kind": kind,
                        "chain": chain,
                        "address": address,
                        "account_reference": reference,
                        "created_at": opened_at,
                        "usable_from": opened_at,
                    },
                )[0]
            )
        if not LedgerEntry.objects.filter(fund=fund, kind=LedgerEntry.Kind.CONTRIBUTION).exists():
            for source_name, amount in spec["cash"]:
                opening_balance_record(
                    fund=fund,
                    funding_source=sources[source_name],
                    amount_usd=amount,
                    memo="Opening contribution",
                    booked_at=opened_at,
                )
            for source_name, symbol, quantity in spec["in_kind"]:
                price = consensus_for(assets[symbol], at=opened_at)
                opening_balance_record(
                    fund=fund,
                    funding_source=sources[source_name],
                    asset=assets[symbol],
                    account=accounts[assets[symbol].chain],
                    quantity=quantity,
                    amount_usd=(quantity * price.price).quantize(Decimal("0.01")),
                    memo="Transferred to the reserve by court order",
                    booked_at=opened_at,
                )
        return fund
