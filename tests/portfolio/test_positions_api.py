"""``GET /api/v1/funds/{id}/positions/``: cash, positions and NAV now, amounts as exact strings."""

import datetime as dt
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from governance import services
from portfolio.api.fields import decimal_string
from portfolio.models import FxRate, LedgerEntry, Price
from tests.factories import AssetFactory, FundBuilder, PriceFactory, UserFactory, otp_code

D = Decimal


def positions_url(fund) -> str:
    return f"/api/v1/funds/{fund.pk}/positions/"


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def fill(alem, proposal, *, ref: str, quantity: str, price: str, fee: str):
    return services.execution_record(
        proposal_id=proposal.pk,
        actor=alem.users["treasury"],
        quantity=D(quantity),
        price_usd=D(price),
        fee_usd=D(fee),
        venue="binance",
        external_ref=ref,
        executed_at=timezone.now(),
        otp_token=otp_code(alem.users["treasury"]),
    )


def contribute(alem, **kwargs):
    return services.opening_balance_record(
        fund=alem.fund,
        funding_source=alem.funding_source,
        **kwargs,
    )


@pytest.fixture
def traded(alem):
    """USD 25M cash, two fills of BNB (400 at 600.00 + 12.50 fee, 250.5 at 600.01 + 3.00 fee)
    and 10 BNB contributed in kind at a cost of USD 5,000."""
    proposal = alem.approve_fully(alem.proposal(submit=True))
    fill(alem, proposal, ref="ord-1", quantity="400", price="600.00", fee="12.50")
    fill(alem, proposal, ref="ord-2", quantity="250.5", price="600.01", fee="3.00")
    contribute(alem, asset=alem.asset, quantity=D("10"), amount_usd=D("5000.00"))
    return alem


@pytest.fixture
def other(db):
    return FundBuilder.alem_like(prefix="other_")


# ---------------------------------------------------------------------------------------------
# What it shows
# ---------------------------------------------------------------------------------------------


def test_positions_equal_a_hand_computation_after_contributions_and_fills(traded):
    FxRate.objects.create(rate=D("512.5"), date=timezone.localdate() - dt.timedelta(days=2))

    response = client_for(traded.users["auditor"]).get(positions_url(traded.fund))

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "fund": traded.fund.pk,
        "valued_at": body["valued_at"],
        # 25,000,000 - 400 x 600.00 - 12.50 - 250.5 x 600.01 - 3.00
        "cash_usd": "24609681.995",
        # 660.5 x 600.005 (the median of Binance 600.00 and CoinGecko 600.01)
        "holdings_value_usd": "396303.3025",
        "nav_usd": "25005985.2975",
        # The official rate in force today: the last one published
        "usd_kzt_rate": "512.5",
        "usd_kzt_rate_date": (timezone.localdate() - dt.timedelta(days=2)).isoformat(),
        "nav_kzt": "12815567464.96875",  # 25,005,985.2975 x 512.5
        "unpriced": [],
        "positions": [
            {
                "asset": "BNB",
                "quantity": "660.5",
                "average_cost_usd": body["positions"][0]["average_cost_usd"],
                # Fees are paid from cash, not capitalised: 240,000 + 150,302.505 + 5,000
                "cost_basis_usd": "395302.505",
                "price_usd": "600.005",
                "price": {
                    "usable": True,
                    "flags": [],
                    "sources": body["positions"][0]["price"]["sources"],
                    "age_seconds": body["positions"][0]["price"]["age_seconds"],
                },
                "market_value_usd": "396303.3025",
                "unrealized_pnl_usd": "1000.7975",  # 396,303.3025 - 395,302.505
                "share": body["positions"][0]["share"],
            }
        ],
    }
    position = body["positions"][0]
    assert D(position["average_cost_usd"]) == D("395302.505") / D("660.5")
    assert D(position["share"]) == D("396303.3025") / D("25005985.2975")
    assert sorted(position["price"]["sources"]) == ["binance", "coingecko"]
    assert 0 <= position["price"]["age_seconds"] < 300
    valued_at = dt.datetime.fromisoformat(body["valued_at"])
    assert abs(timezone.now() - valued_at) < dt.timedelta(minutes=5)


def test_a_fund_holding_only_cash_has_no_positions_and_nav_equal_to_cash(alem):
    response = client_for(alem.users["manager"]).get(positions_url(alem.fund))

    assert response.status_code == 200
    body = response.json()
    assert (body["cash_usd"], body["holdings_value_usd"], body["nav_usd"]) == (
        "25000000",
        "0",
        "25000000",
    )
    assert body["positions"] == []


def test_without_an_official_rate_the_nav_in_tenge_is_null(traded):
    # A rate published for a later day is not in force yet
    FxRate.objects.create(rate=D("500"), date=timezone.localdate() + dt.timedelta(days=1))

    body = client_for(traded.users["risk"]).get(positions_url(traded.fund)).json()

    assert body["nav_usd"] == "25005985.2975"
    assert (body["usd_kzt_rate"], body["usd_kzt_rate_date"], body["nav_kzt"]) == (None, None, None)


def test_a_holding_without_any_price_makes_the_nav_null_and_is_named(traded):
    eth = AssetFactory(symbol="ETH")
    contribute(traded, asset=eth, quantity=D("3"), amount_usd=D("9000.00"))
    FxRate.objects.create(rate=D("512.5"), date=timezone.localdate())

    body = client_for(traded.users["risk"]).get(positions_url(traded.fund)).json()

    assert body["unpriced"] == ["ETH"]
    assert (body["nav_usd"], body["holdings_value_usd"], body["nav_kzt"]) == (None, None, None)
    bnb, unpriced = body["positions"]
    assert (bnb["asset"], bnb["market_value_usd"], bnb["share"]) == ("BNB", "396303.3025", None)
    assert unpriced == {
        "asset": "ETH",
        "quantity": "3",
        "average_cost_usd": "3000",
        "cost_basis_usd": "9000",
        "price_usd": None,
        "price": {"usable": False, "flags": ["missing"], "sources": [], "age_seconds": None},
        "market_value_usd": None,
        "unrealized_pnl_usd": None,
        "share": None,
    }


def test_a_stale_price_is_shown_with_its_flag_and_age(alem):
    sol = AssetFactory(symbol="SOL")
    observed = timezone.now() - dt.timedelta(hours=2)
    PriceFactory(asset=sol, price=D("140.25"), observed_at=observed)
    contribute(alem, asset=sol, quantity=D("100"), amount_usd=D("15000.00"))

    body = client_for(alem.users["risk"]).get(positions_url(alem.fund)).json()

    (position,) = body["positions"]
    assert position["price_usd"] == "140.25"
    assert position["price"]["usable"] is False
    assert position["price"]["flags"] == ["stale"]
    assert position["price"]["sources"] == []  # no fresh quote made the price
    assert 7200 <= position["price"]["age_seconds"] < 7200 + 300
    assert position["market_value_usd"] == "14025"
    assert position["unrealized_pnl_usd"] == "-975"
    assert body["nav_usd"] == "25014025"


def test_every_amount_is_a_plain_decimal_string_without_trailing_zeros(traded):
    FxRate.objects.create(rate=D("512.5"), date=timezone.localdate())

    body = client_for(traded.users["auditor"]).get(positions_url(traded.fund)).json()

    position = body["positions"][0]
    amounts = [body[k] for k in ("cash_usd", "holdings_value_usd", "nav_usd", "nav_kzt")] + [
        position[k]
        for k in (
            "quantity",
            "average_cost_usd",
            "cost_basis_usd",
            "price_usd",
            "market_value_usd",
            "unrealized_pnl_usd",
            "share",
        )
    ]
    for amount in amounts:
        assert isinstance(amount, str)
        assert re.fullmatch(r"-?\d+(\.\d*[1-9])?", amount), amount


# ---------------------------------------------------------------------------------------------
# The decimal rendering helper
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (D("25000000.0000000000000000000000000000"), "25000000"),
        (D("100"), "100"),
        (D("1E+2"), "100"),
        (D("100.00"), "100"),
        (D("600.0050000000"), "600.005"),
        (D("0.000000000000000001"), "0.000000000000000001"),
        (D("1E-18"), "0.000000000000000001"),
        (D("-975.50"), "-975.5"),
        (D("-0.00"), "0"),
        (D("0E-28"), "0"),
        (
            D("12345678901234567890.1234567890123456789012345678"),
            "12345678901234567890.1234567890123456789012345678",
        ),
        ("512.3400", "512.34"),
        (7, "7"),
    ],
)
def test_decimal_string_strips_trailing_zeros_and_never_rounds(value, text):
    assert decimal_string(value) == text


@pytest.mark.parametrize("value", [D("NaN"), D("Infinity"), 1.5])
def test_decimal_string_refuses_what_is_not_an_exact_amount(value):
    with pytest.raises((TypeError, ValueError)):
        decimal_string(value)


# ---------------------------------------------------------------------------------------------
# Who may see it
# ---------------------------------------------------------------------------------------------


def test_another_funds_positions_are_a_404(traded, other):
    response = client_for(other.users["auditor"]).get(positions_url(traded.fund))

    assert response.status_code == 404
    assert "cash_usd" not in response.json()


def test_a_superuser_without_a_fund_role_gets_a_404(traded):
    admin = UserFactory(username="admin", is_superuser=True, is_staff=True)

    response = client_for(admin).get(positions_url(traded.fund))

    assert response.status_code == 404


def test_an_unknown_fund_is_a_404(alem):
    response = client_for(alem.users["auditor"]).get("/api/v1/funds/999999/positions/")

    assert response.status_code == 404


def test_positions_need_authentication(alem):
    response = APIClient().get(positions_url(alem.fund))

    assert response.status_code == 401
    assert "cash_usd" not in response.json()


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_positions_are_read_only(alem, method):
    entries = LedgerEntry.objects.count()

    response = getattr(client_for(alem.users["fundadmin"]), method)(positions_url(alem.fund), {})

    assert response.status_code == 405
    assert LedgerEntry.objects.count() == entries


# ---------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------


def positions_queries(alem) -> int:
    client = client_for(alem.users["auditor"])
    # Warm up first: guardian caches content types per process on its first lookup.
    client.get(positions_url(alem.fund))
    with CaptureQueriesContext(connection) as queries:
        response = client.get(positions_url(alem.fund))
    assert response.status_code == 200
    return len(queries)


def test_positions_queries_do_not_grow_with_the_number_of_ledger_entries(alem):
    # Given 5, then 50 ledger entries over cash and one held asset
    proposal = alem.approve_fully(alem.proposal(submit=True))
    fill(alem, proposal, ref="ord-1", quantity="1", price="600.00", fee="1.00")  # 3 entries
    contribute(alem, asset=alem.asset, quantity=D("1"), amount_usd=D("600.00"))
    assert LedgerEntry.objects.filter(fund=alem.fund).count() == 5
    with_5 = positions_queries(alem)

    for i in range(45):
        if i % 2:
            contribute(alem, amount_usd=D("1000.00"))
        else:
            contribute(alem, asset=alem.asset, quantity=D("0.5"), amount_usd=D("300.00"))
    assert LedgerEntry.objects.filter(fund=alem.fund).count() == 50
    with_50 = positions_queries(alem)

    assert with_50 == with_5
    body = client_for(alem.users["auditor"]).get(positions_url(alem.fund)).json()
    assert body["positions"][0]["quantity"] == "13.5"  # 1 + 1 + 23 x 0.5
    assert body["cash_usd"] == str(D("25000000") - D("601") + 22 * 1000)
    assert Price.objects.filter(asset=alem.asset).count() == 2


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------


def test_the_schema_documents_positions_and_the_nav_history(db):
    schema = client_for(UserFactory()).get("/api/schema/", {"format": "json"}).json()

    positions = schema["paths"]["/api/v1/funds/{id}/positions/"]["get"]
    nav = schema["paths"]["/api/v1/funds/{id}/nav/"]["get"]
    assert set(positions["responses"]) == {"200", "404"}
    assert {p["name"] for p in nav["parameters"]} >= {"id", "from", "to", "page"}
    assert set(nav["responses"]) == {"200", "400", "404"}
    position = schema["components"]["schemas"]["Position"]["properties"]
    assert position["market_value_usd"]["type"] == "string"
    assert position["market_value_usd"]["format"] == "decimal"
