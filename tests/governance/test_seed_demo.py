"""seed_demo: the demo data as designed, loaded once, on a database of its own.

Its own module: the demo seeds the Alem fund itself, so it cannot share a module with the
``alem`` fixture's fund.
"""

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from guardian.models import UserObjectPermission

from governance.audit import audit_verify
from governance.management.commands import seed_demo
from governance.models import ApprovalPolicy, AuditEvent, PolicyStage, Proposal, ProposalState
from governance.roles import roles_on_fund
from governance.selectors import policy_in_force
from governance.services import decision_record, proposal_create, proposal_submit
from portfolio import selectors as books
from portfolio.models import (
    Asset,
    Fund,
    FundingSource,
    FundRole,
    LedgerEntry,
    NavSnapshot,
    Price,
)
from tests.commands import run_command as run
from tests.factories import PriceFactory, UserFactory, otp_code

User = get_user_model()
R = FundRole
D = Decimal


# ---------------------------------------------------------------------------------------------
# seed_demo
# ---------------------------------------------------------------------------------------------

ROLE_OF = {
    "manager": R.PROPOSE,
    "risk": R.REVIEW_RISK,
    "committee1": R.VOTE_COMMITTEE,
    "committee2": R.VOTE_COMMITTEE,
    "committee3": R.VOTE_COMMITTEE,
    "ministry": R.APPROVE_MINISTRY,
    "treasury": R.EXECUTE_TRADES,
    "auditor": R.AUDIT,
    "fundadmin": R.MANAGE_POLICY,
}
PRICE_FILES = ("BNB-USD.csv", "BTC-USD.csv", "ETH-USD.csv", "SOL-USD.csv")
DEMO_USERNAMES = ["admin", "admin2", *ROLE_OF, *(f"reserve_{username}" for username in ROLE_OF)]


@pytest.fixture(autouse=True)
def demo_mode(settings):
    """seed_demo runs on development machines only (DEBUG on)."""
    settings.DEBUG = True


@pytest.fixture(autouse=True)
def demo_var_dir(settings, tmp_path):
    """seed_demo writes the authenticators' URIs under VAR_DIR; keep them out of the repo."""
    settings.VAR_DIR = tmp_path / "var"
    return settings.VAR_DIR


def seed(**options) -> str:
    """seed_demo with a NAV history of three days unless told otherwise: the days between are
    valued the same way, and the full window is the one whole-data test's."""
    options.setdefault("nav_days", 3)
    return run("seed_demo", **options)


@pytest.fixture
def few_prices(tmp_path, monkeypatch) -> dict[str, int]:
    """The real price files cut to the days from a week before the demo's opening day, so
    seeding stays fast; returns how many daily rows each asset keeps."""
    since = (seed_demo.OPENING_DAY - dt.timedelta(days=7)).isoformat()
    kept = {}
    for name in PRICE_FILES:
        header, *rows = (seed_demo.PRICE_DIR / name).read_text(encoding="utf-8").splitlines()
        rows = [row for row in rows if row[:10] >= since]
        (tmp_path / name).write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
        kept[name.split("-")[0]] = len(rows)
    monkeypatch.setattr(seed_demo, "PRICE_DIR", tmp_path)
    return kept


def counts() -> dict[str, int]:
    models = [
        User,
        Fund,
        Asset,
        FundingSource,
        Price,
        LedgerEntry,
        ApprovalPolicy,
        PolicyStage,
        AuditEvent,
        UserObjectPermission,
        TOTPDevice,
    ]
    return {model.__name__: model.objects.count() for model in models}


@pytest.mark.django_db
def test_seed_demo_loads_the_real_price_history_once():
    # The one test that loads every price file in full.
    expected = {
        name.split("-")[0]: len(
            (seed_demo.PRICE_DIR / name).read_text(encoding="utf-8").splitlines()
        )
        - 1
        for name in PRICE_FILES
    }

    run("seed_demo")
    first = counts()
    run("seed_demo")

    assert counts() == first
    for symbol, rows in expected.items():
        assert Price.objects.filter(asset__symbol=symbol, source="yahoo").count() == rows
    assert expected["BNB"] > 1000
    assert audit_verify().ok
    # One end-of-day NAV a day, from the opening day, at most NAV_HISTORY_DAYS of them.
    opened_days = (timezone.localdate() - seed_demo.OPENING_DAY).days + 1
    history_days = min(opened_days, seed_demo.NAV_HISTORY_DAYS)
    for fund in Fund.objects.all():
        assert fund.nav_snapshots.count() == history_days


@pytest.mark.django_db
def test_seed_demo_values_only_the_last_days_it_is_asked_for(few_prices):
    seed(nav_days=5)

    today = timezone.localdate()
    expected = [today - dt.timedelta(days=n) for n in range(4, -1, -1)]
    for fund in Fund.objects.all():
        assert list(fund.nav_snapshots.order_by("date").values_list("date", flat=True)) == (
            expected
        )


@pytest.mark.django_db
def test_seed_demo_values_no_day_before_the_opening_day(few_prices):
    seed(nav_days=100_000)

    for fund in Fund.objects.all():
        first = fund.nav_snapshots.order_by("date").first()
        assert first.date == seed_demo.OPENING_DAY
        assert fund.nav_snapshots.count() == (timezone.localdate() - seed_demo.OPENING_DAY).days + 1


@pytest.mark.django_db
def test_seed_demo_values_nothing_when_asked_for_no_days(few_prices):
    seed(nav_days=0)

    assert Fund.objects.count() == 2
    assert not NavSnapshot.objects.exists()


@pytest.mark.django_db
def test_seed_demo_refuses_to_run_outside_development_and_creates_nothing(settings, demo_var_dir):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="only runs with DEBUG on"):
        seed()

    assert not User.objects.exists()
    assert not Fund.objects.exists()
    assert not (demo_var_dir / seed_demo.OTP_FILE_NAME).exists()


@pytest.mark.django_db
def test_seed_demo_refuses_a_negative_number_of_days_before_seeding_anything(few_prices):
    with pytest.raises(CommandError, match="--nav-days must be 0 or more, not -1"):
        seed(nav_days=-1)

    assert not Fund.objects.exists()


@pytest.mark.django_db
def test_seed_demo_creates_the_demo_data_as_designed(few_prices):
    seed()

    # Both funds.
    alem = Fund.objects.get(slug="alem")
    reserve = Fund.objects.get(slug="reserve")
    assert alem.name == "Alem Crypto Fund"
    assert reserve.name == "National Digital Asset Reserve"
    # Every demo user, with exactly their role, on their own fund only.
    for username, role in ROLE_OF.items():
        user = User.objects.get(username=username)
        reserve_user = User.objects.get(username=f"reserve_{username}")
        assert roles_on_fund(user, alem) == {role}, username
        assert roles_on_fund(user, reserve) == set(), username
        assert roles_on_fund(reserve_user, reserve) == {role}, username
        assert roles_on_fund(reserve_user, alem) == set(), username
        assert not user.is_superuser
    admin = User.objects.get(username="admin")
    assert (admin.is_superuser, admin.is_staff) == (True, True)
    # A second site administrator, so that the four-eyes changes can be shown.
    admin2 = User.objects.get(username="admin2")
    assert (admin2.is_superuser, admin2.is_staff) == (True, True)
    assert roles_on_fund(admin2, alem) == roles_on_fund(admin2, reserve) == set()
    # The site administrator may be a second pair of eyes on policies, but never decides.
    deciding = {R.PROPOSE, R.REVIEW_RISK, R.VOTE_COMMITTEE, R.APPROVE_MINISTRY, R.EXECUTE_TRADES}
    assert not roles_on_fund(admin, alem) & deciding
    assert not roles_on_fund(admin, reserve) & deciding
    # Alem's policy, published by someone other than its drafter.
    policy = policy_in_force(alem)
    assert policy.version == 1
    assert policy.published_by_id != policy.drafted_by_id
    assert list(
        policy.stages.order_by("order").values_list(
            "order", "name", "permission", "quorum", "applies_from_usd"
        )
    ) == [
        (1, "Risk review", "review_risk", 1, D("0")),
        (2, "Investment committee", "vote_committee", 2, D("0")),
        (3, "Ministry sign-off", "approve_ministry", 1, D("1000000.00")),
    ]
    assert policy_in_force(reserve) is not None
    # Cash, seized bitcoin and price history.
    assert books.fund_cash_usd(alem) == D("25000000.00")
    assert books.fund_cash_usd(reserve) == D("8000000.00")
    assert [(h.symbol, h.quantity) for h in books.fund_holdings(reserve)] == [("BTC", D("120"))]
    assert "BNB" in set(alem.whitelisted_assets.values_list("symbol", flat=True))
    for symbol, rows in few_prices.items():
        assert Price.objects.filter(asset__symbol=symbol, source="yahoo").count() == rows
    assert audit_verify().ok


@pytest.mark.django_db
def test_seed_demo_gives_every_demo_user_an_authenticator_and_writes_their_uris(
    few_prices, demo_var_dir
):
    output = seed()

    devices = {d.user.username: d for d in TOTPDevice.objects.select_related("user")}
    assert sorted(devices) == sorted(DEMO_USERNAMES)
    assert {(d.name, d.confirmed) for d in devices.values()} == {("Authenticator", True)}
    expected = [f"{username} {devices[username].config_url}" for username in DEMO_USERNAMES]
    written = (demo_var_dir / "demo-otp.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(written) == sorted(expected)
    assert written[0] == f"admin {devices['admin'].config_url}"
    assert devices["risk"].config_url.startswith("otpauth://totp/Alem%3Arisk?secret=")
    assert str(demo_var_dir / "demo-otp.txt") in output
    for line in expected:
        assert f"  {line}\n" in output

    # Seeding again keeps every device and its key, so an app set up once keeps working.
    seed()

    assert {d.user.username: (d.pk, d.key) for d in TOTPDevice.objects.all()} == {
        username: (device.pk, device.key) for username, device in devices.items()
    }
    assert sorted(
        (demo_var_dir / "demo-otp.txt").read_text(encoding="utf-8").splitlines()
    ) == sorted(expected)


@pytest.mark.django_db
def test_seed_demo_keeps_an_authenticator_a_user_already_has(few_prices):
    risk = UserFactory(username="risk")
    phone = TOTPDevice.objects.create(user=risk, name="Phone", confirmed=True)

    seed()

    assert list(TOTPDevice.objects.filter(user=risk)) == [phone]


@pytest.mark.django_db
def test_seed_demo_sets_the_default_password_and_password_resets_it(few_prices):
    seed()
    assert User.objects.get(username="manager").check_password(seed_demo.DEFAULT_PASSWORD)
    first = counts()

    seed(password="another-demo-pass")

    for username in ("admin", "manager", "reserve_ministry"):
        user = User.objects.get(username=username)
        assert user.check_password("another-demo-pass"), username
        assert not user.check_password(seed_demo.DEFAULT_PASSWORD), username
    again = counts()
    recorded = again.pop("AuditEvent") - first.pop("AuditEvent")
    assert again == first
    # each password the command reset is on the record, and nothing else
    resets = AuditEvent.objects.order_by("-sequence")[:recorded]
    assert recorded > 0
    assert {(e.action, tuple(e.payload["changes"])) for e in resets} == {
        ("user.account_changed", ("password",))
    }


@pytest.mark.django_db
def test_the_seeded_alem_fund_approves_a_proposal_through_its_policy(few_prices):
    seed()
    alem = Fund.objects.get(slug="alem")
    users = {u.username: u for u in User.objects.all()}
    bnb = Asset.objects.get(symbol="BNB")
    # The history is days old; the fetch tasks would bring fresh quotes like these.
    PriceFactory(asset=bnb, source="binance", price=D("600.00"))
    PriceFactory(asset=bnb, source="coingecko", price=D("600.01"))

    proposal = proposal_create(
        author=users["manager"],
        fund=alem,
        asset=bnb,
        notional_usd=D("1000000.00"),
        limit_price_usd=D("650"),
        rationale="Demo walk-through.",
        funding_source=alem.funding_sources.get(),
    )
    proposal_submit(proposal_id=proposal.pk, actor=users["manager"])
    for username in ("risk", "committee1", "committee2", "ministry"):
        decision_record(
            proposal_id=proposal.pk,
            user=users[username],
            verdict="approve",
            otp_token=otp_code(users[username]),
        )

    assert Proposal.objects.get(pk=proposal.pk).state == ProposalState.APPROVED


def test_price_files_exist_for_the_demo():
    for name in PRICE_FILES:
        assert Path(seed_demo.PRICE_DIR, name).is_file(), name
