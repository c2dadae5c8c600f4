"""Positions, cash and NAV: derived from the ledger, valued at consensus prices, exactly.

Values read back from the database are compared digit for digit, as are products of quantities
and prices computed in memory, where ``Decimal`` keeps every digit.
"""

import csv
import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from governance import services
from governance.exceptions import ExecutionRefused
from portfolio import selectors
from portfolio.calculations import to_reporting_currency, value_positions
from portfolio.models import FxRate, LedgerEntry, NavSnapshot, Price
from portfolio.prices.services import parse_daily_closes, price_history_import
from portfolio.services import end_of_day, nav_snapshot_take
from tests.factories import (
    AssetFactory,
    FundFactory,
    FundingSourceFactory,
    PriceFactory,
    UserFactory,
    otp_code,
)
from tests.profiles import examples
from tests.web import signed_in

D = Decimal
BNB_CSV = Path(django_settings.BASE_DIR) / "portfolio" / "data" / "prices" / "BNB-USD.csv"


def almaty(*args) -> dt.datetime:
    return timezone.make_aware(dt.datetime(*args))


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


def approved_proposal(alem, notional: str = "500000.00"):
    proposal = alem.proposal(submit=True, notional_usd=D(notional))
    proposal = alem.approve_fully(proposal)
    assert proposal.state == "approved"
    return proposal


# ---------------------------------------------------------------------------------------------
# Pure rules
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class H:
    asset_id: int
    symbol: str
    quantity: Decimal
    cost_usd: Decimal


def test_value_positions_sums_cash_and_market_values_exactly():
    holdings = [H(1, "BNB", D("2.5"), D("1400")), H(2, "BTC", D("0.1"), D("9000"))]

    valuation = value_positions(holdings, {1: D("600.01"), 2: D("90394.3125")}, D("100.5"))

    bnb, btc = valuation.positions
    assert bnb.market_value_usd == D("1500.025")
    assert btc.market_value_usd == D("9039.43125")
    assert valuation.nav_usd == D("10639.95625")
    assert bnb.unrealized_pnl_usd == D("100.025")
    assert btc.unrealized_pnl_usd == D("39.43125")
    assert bnb.share == D("1500.025") / D("10639.95625")
    assert bnb.average_cost_usd == D("560")
    assert valuation.unpriced == ()


def test_a_holding_without_price_leaves_the_nav_and_every_share_unknown():
    holdings = [H(1, "BNB", D("2"), D("1200")), H(2, "KZTE", D("1000"), D("2"))]

    valuation = value_positions(holdings, {1: D("600")}, D("50"))

    assert valuation.nav_usd is None
    assert valuation.unpriced == ("KZTE",)
    bnb, kzte = valuation.positions
    assert (bnb.market_value_usd, bnb.share) == (D("1200"), None)
    assert (kzte.price_usd, kzte.market_value_usd, kzte.unrealized_pnl_usd) == (None, None, None)


def test_nav_in_tenge_is_the_usd_amount_at_the_official_rate_and_unknown_without_one():
    assert to_reporting_currency(D("1000.5"), D("512.34")) == D("512596.17")
    assert to_reporting_currency(D("1000.5"), None) is None
    assert to_reporting_currency(None, D("512.34")) is None


# ---------------------------------------------------------------------------------------------
# Positions after contributions and fills, by hand
# ---------------------------------------------------------------------------------------------


def test_positions_equal_a_hand_computation_after_contributions_and_fills(alem):
    # Given USD 25M cash (the builder), two fills and 10 BNB contributed in kind
    proposal = approved_proposal(alem)
    fill(alem, proposal, ref="ord-1", quantity="400", price="600.00", fee="12.50")
    fill(alem, proposal, ref="ord-2", quantity="250.5", price="600.01", fee="3.00")
    services.opening_balance_record(
        fund=alem.fund,
        funding_source=alem.funding_source,
        asset=alem.asset,
        quantity=D("10"),
        amount_usd=D("5000.00"),
    )

    # When the fund is valued now
    current = selectors.fund_valuation(alem.fund)

    # Then, by hand: cash 25,000,000 - 400 x 600.00 - 12.50 - 250.5 x 600.01 - 3.00
    valuation = current.valuation
    assert valuation.cash_usd == D("24609681.995")
    (bnb,) = valuation.positions
    assert bnb.symbol == "BNB"
    assert bnb.quantity == D("660.5")
    # Fees are expensed from cash, not capitalised: cost = 240,000 + 150,302.505 + 5,000
    assert bnb.cost_basis_usd == D("395302.505")
    assert bnb.average_cost_usd == D("395302.505") / D("660.5")
    # The consensus is the median of Binance 600.00 and CoinGecko 600.01
    assert bnb.price_usd == D("600.005")
    assert current.consensus[alem.asset.pk].usable
    assert bnb.market_value_usd == D("396303.3025")
    assert bnb.unrealized_pnl_usd == D("1000.7975")
    assert valuation.nav_usd == D("25005985.2975")
    assert bnb.share == D("396303.3025") / D("25005985.2975")
    assert valuation.unpriced == ()


def test_a_refused_fill_changes_neither_the_ledger_nor_the_positions(alem):
    proposal = approved_proposal(alem)
    fill(alem, proposal, ref="ord-1", quantity="100", price="600.00", fee="0")
    before = selectors.fund_valuation(alem.fund).valuation
    entries = LedgerEntry.objects.count()

    with pytest.raises(ExecutionRefused) as refused:
        fill(alem, proposal, ref="ord-2", quantity="10", price="640.00", fee="0")

    assert refused.value.code == "price_outside_tolerance"
    assert LedgerEntry.objects.count() == entries
    after = selectors.fund_valuation(alem.fund).valuation
    assert (after.cash_usd, after.positions[0].quantity) == (D("24940000"), D("100"))
    assert after.cash_usd == before.cash_usd
    assert after.positions[0].cost_basis_usd == before.positions[0].cost_basis_usd


def test_valuation_at_a_moment_ignores_later_bookings_and_later_prices(alem):
    # Given SOL contributed yesterday, priced then, and priced again now
    asset = AssetFactory(symbol="SOL")
    yesterday_noon = timezone.now() - dt.timedelta(days=1)
    PriceFactory(asset=asset, price=D("140.00"), observed_at=yesterday_noon)
    PriceFactory(asset=asset, price=D("150.00"))
    services.opening_balance_record(
        fund=alem.fund,
        funding_source=alem.funding_source,
        asset=asset,
        quantity=D("100"),
        amount_usd=D("14000.00"),
        booked_at=yesterday_noon,
    )

    # When the fund is valued an hour after the contribution (before the builder's cash)
    then = selectors.fund_valuation(alem.fund, at=yesterday_noon + dt.timedelta(hours=1))
    now = selectors.fund_valuation(alem.fund)

    # Then only what was booked and priced by then counts
    assert then.valuation.cash_usd == 0
    assert [(p.symbol, p.price_usd) for p in then.valuation.positions] == [("SOL", D("140"))]
    assert then.valuation.nav_usd == D("14000")
    assert then.consensus[asset.pk].flags == ("stale",)
    assert [(p.symbol, p.price_usd) for p in now.valuation.positions] == [("SOL", D("150"))]
    assert now.valuation.nav_usd == D("25000000") + D("15000")


def test_a_holding_with_no_price_at_all_makes_the_nav_unknown(alem):
    eth = AssetFactory(symbol="ETH")
    services.opening_balance_record(
        fund=alem.fund,
        funding_source=alem.funding_source,
        asset=eth,
        quantity=D("3"),
        amount_usd=D("9000.00"),
    )

    current = selectors.fund_valuation(alem.fund)

    assert current.valuation.nav_usd is None
    assert current.valuation.unpriced == ("ETH",)
    assert current.consensus[eth.pk].flags == ("missing",)


# ---------------------------------------------------------------------------------------------
# Property: positions, cash and NAV never disagree with the ledger
# ---------------------------------------------------------------------------------------------

cents = {"allow_nan": False, "allow_infinity": False, "places": 2}


@dataclass(frozen=True)
class CashIn:
    amount: Decimal


@dataclass(frozen=True)
class InKind:
    symbol: str
    quantity: Decimal
    value: Decimal


@dataclass(frozen=True)
class Fill:
    quantity: Decimal
    price: Decimal
    fee: Decimal


operations = st.lists(
    st.one_of(
        st.builds(CashIn, st.decimals(min_value=D("0.01"), max_value=D("5000000"), **cents)),
        st.builds(
            InKind,
            st.sampled_from(["BNB", "ETH"]),
            st.decimals(
                min_value=D("0.0001"),
                max_value=D("10000"),
                places=4,
                allow_nan=False,
                allow_infinity=False,
            ),
            st.decimals(min_value=D("0"), max_value=D("10000000"), **cents),
        ),
        # Prices from far below to above the limit price (650): some fills pass, others break
        # the tolerance around the consensus (600.005 +- 2%), the limit, the fee limit (1% of
        # quantity x price) or the notional.
        st.builds(
            Fill,
            st.decimals(min_value=D("0.01"), max_value=D("5000"), **cents),
            st.one_of(
                st.decimals(min_value=D("588"), max_value=D("612"), **cents),  # tolerated
                st.decimals(min_value=D("560"), max_value=D("680"), **cents),  # anything
            ),
            st.decimals(min_value=D("0"), max_value=D("100"), **cents),
        ),
    ),
    min_size=1,
    max_size=8,
)


@pytest.fixture
def books(alem):
    """The Alem-like fund with ETH priced too and a USD 4M purchase of BNB approved."""
    eth = AssetFactory(symbol="ETH")
    PriceFactory(asset=eth, price=D("3000.00"), source=Price.Source.BINANCE)
    PriceFactory(asset=eth, price=D("3000.02"), source=Price.Source.COINGECKO)
    proposal = approved_proposal(alem, notional="4000000.00")
    return alem, {"BNB": alem.asset, "ETH": eth}, proposal


@hypothesis_settings(
    max_examples=examples(dev=15, ci=60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_positions_cash_and_nav_always_equal_a_fresh_recomputation_from_the_ledger(books, ops):
    alem, assets, proposal = books
    with transaction.atomic():  # every example starts from the fixture's books
        expected_cash = D("25000000")
        expected = {symbol: [D(0), D(0)] for symbol in assets}  # quantity, cost
        remaining = proposal.notional_usd
        for i, op in enumerate(ops):
            if isinstance(op, CashIn):
                services.opening_balance_record(
                    fund=alem.fund,
                    funding_source=alem.funding_source,
                    amount_usd=op.amount,
                )
                expected_cash += op.amount
            elif isinstance(op, InKind):
                services.opening_balance_record(
                    fund=alem.fund,
                    funding_source=alem.funding_source,
                    asset=assets[op.symbol],
                    quantity=op.quantity,
                    amount_usd=op.value,
                )
                expected[op.symbol][0] += op.quantity
                expected[op.symbol][1] += op.value
            else:
                cost = op.quantity * op.price + op.fee
                acceptable = (
                    op.price <= D("650.00")
                    and abs(op.price - D("600.005")) / D("600.005") <= D("0.02")
                    and op.fee <= op.quantity * op.price * D("0.01")
                    and cost <= remaining
                )
                entries = LedgerEntry.objects.count()
                try:
                    fill(
                        alem,
                        proposal,
                        ref=f"ord-{i}",
                        quantity=str(op.quantity),
                        price=str(op.price),
                        fee=str(op.fee),
                    )
                except ExecutionRefused as exc:
                    event(f"fill refused: {exc.code}")
                    assert not acceptable
                    assert LedgerEntry.objects.count() == entries
                else:
                    event("fill booked")
                    assert acceptable
                    remaining -= cost
                    expected_cash -= cost
                    expected["BNB"][0] += op.quantity
                    expected["BNB"][1] += op.quantity * op.price
                    proposal.refresh_from_db()
                    if proposal.state == "executed":
                        break

        # A fresh recomputation: every ledger row of the fund, summed in Python
        cash, quantity, cost = D(0), {}, {}
        for entry in LedgerEntry.objects.filter(fund=alem.fund).select_related("asset"):
            if entry.asset is None:
                cash += entry.quantity
            else:
                symbol = entry.asset.symbol
                quantity[symbol] = quantity.get(symbol, D(0)) + entry.quantity
                cost[symbol] = cost.get(symbol, D(0)) + entry.value_usd
        current = selectors.fund_valuation(alem.fund)
        valuation = current.valuation

        assert valuation.cash_usd == cash == expected_cash
        positions = {p.symbol: p for p in valuation.positions}
        assert {s: (p.quantity, p.cost_basis_usd) for s, p in positions.items()} == {
            s: (quantity[s], cost[s]) for s in quantity
        }
        assert {s: (quantity[s], cost[s]) for s in quantity} == {
            s: tuple(v) for s, v in expected.items() if v[0]
        }
        # NAV: cash plus every position at the stored prices (the median of the two sources)
        stored = {
            symbol: sum(Price.objects.filter(asset=asset).values_list("price", flat=True)) / 2
            for symbol, asset in assets.items()
        }
        assert valuation.nav_usd == cash + sum((quantity[s] * stored[s] for s in quantity), D(0))
        for symbol, position in positions.items():
            assert position.price_usd == stored[symbol]
            assert position.market_value_usd == quantity[symbol] * stored[symbol]
        transaction.set_rollback(True)


# ---------------------------------------------------------------------------------------------
# NAV on the real daily price history
# ---------------------------------------------------------------------------------------------

# Rows of portfolio/data/prices/BNB-USD.csv (Yahoo daily closes of UTC days), copied by hand.
BNB_CLOSES = {
    "2025-11-29": "873.6898803710938",
    "2025-11-30": "877.5767822265625",
    "2025-12-01": "827.4053955078125",
    "2025-12-02": "877.03466796875",
}
# The same closes as stored (PriceField keeps 10 places; rounded half to even), by hand.
BNB_STORED = {
    "2025-11-29": D("873.6898803711"),
    "2025-11-30": D("877.5767822266"),
    "2025-12-01": D("827.4053955078"),
    "2025-12-02": D("877.0346679688"),
}


@pytest.fixture
def bnb_history(db):
    """A fund holding real BNB history: USD 1M cash on 29 November 2025 (Almaty), 1,000 BNB
    contributed in kind at noon on 30 November, USD 250,000 more on 2 December."""
    with BNB_CSV.open(newline="") as handle:
        rows = {row["Date"]: row["Close"] for row in csv.DictReader(handle)}
    assert {day: rows[day] for day in BNB_CLOSES} == BNB_CLOSES
    bnb = AssetFactory(symbol="BNB")
    added = price_history_import(asset=bnb, closes=parse_daily_closes(BNB_CSV))
    assert added == len(rows) == 1827
    fund = FundFactory(slug="history")
    source = FundingSourceFactory(fund=fund, name="Seized assets", kind="seized_assets")
    for booked_at, kwargs in [
        (almaty(2025, 11, 29, 9), {"amount_usd": D("1000000.00")}),
        (
            almaty(2025, 11, 30, 12),
            {"asset": bnb, "quantity": D("1000"), "amount_usd": D("873689.88")},
        ),
        (almaty(2025, 12, 2, 10), {"amount_usd": D("250000.00")}),
    ]:
        services.opening_balance_record(
            fund=fund, funding_source=source, booked_at=booked_at, **kwargs
        )
    return fund, bnb


def test_a_daily_close_is_observed_the_next_morning_in_almaty(bnb_history):
    _, bnb = bnb_history

    close = Price.objects.get(
        asset=bnb, observed_at=dt.datetime(2025, 12, 1, 23, 59, 59, tzinfo=dt.UTC)
    )
    seen_on_first_december = Price.objects.get(asset=bnb, observed_at__date="2025-12-01")

    # 23:59:59 UTC of 1 December is 04:59:59 of 2 December in Almaty (UTC+5 since March 2024;
    # it was 05:59:59 under the former UTC+6).
    assert close.price == BNB_STORED["2025-12-01"]
    assert close.source == "yahoo"
    assert timezone.localtime(close.observed_at) == almaty(2025, 12, 2, 4, 59, 59)
    # So the only close observed during 1 December in Almaty is that of 30 November
    assert seen_on_first_december.price == BNB_STORED["2025-11-30"]


def test_end_of_day_nav_on_the_real_bnb_history_equals_a_hand_computation(bnb_history):
    fund, _ = bnb_history

    snapshots = {
        day: nav_snapshot_take(fund=fund, day=dt.date.fromisoformat(day))
        for day in ["2025-11-29", "2025-11-30", "2025-12-01", "2025-12-02", "2025-12-03"]
    }

    # 29 November: the cash only, the BNB is not contributed yet
    first = snapshots["2025-11-29"]
    assert (first.cash_usd, first.holdings_value_usd, first.nav_usd) == (D("1e6"), 0, D("1e6"))
    assert first.positions == []
    # From 30 November the end-of-day NAV in Almaty uses the close of the *previous* UTC day:
    # the close of day D is only observed at 04:59:59 on D+1 in Almaty.
    expected = {
        "2025-11-30": (D("1000000"), BNB_STORED["2025-11-29"]),
        "2025-12-01": (D("1000000"), BNB_STORED["2025-11-30"]),
        "2025-12-02": (D("1250000"), BNB_STORED["2025-12-01"]),
        "2025-12-03": (D("1250000"), BNB_STORED["2025-12-02"]),
    }
    for day, (cash, close) in expected.items():
        snapshot = snapshots[day]
        assert snapshot.valued_at == end_of_day(dt.date.fromisoformat(day))
        assert snapshot.cash_usd == cash
        assert snapshot.holdings_value_usd == D("1000") * close
        assert snapshot.nav_usd == cash + D("1000") * close
        (position,) = snapshot.positions
        # Stored as decimal strings (their zeros depend on the database); compared as numbers
        assert position["asset"] == "BNB"
        assert D(position["quantity"]) == D("1000")
        assert D(position["cost_basis_usd"]) == D("873689.88")
        assert D(position["price_usd"]) == close
        assert D(position["market_value_usd"]) == D("1000") * close
        # One source, last seen about 19 hours before: shown, flagged, never usable.
        assert position["price_flags"] == ["stale"]
    # The NAV of 2 December (Almaty) is at the close of 1 December, not of 2 December
    assert snapshots["2025-12-02"].nav_usd == D("1250000") + D("827405.3955078")
    assert snapshots["2025-12-02"].nav_usd != D("1250000") + D("1000") * BNB_STORED["2025-12-02"]
    assert snapshots["2025-12-01"].nav_usd == D("1877576.7822266")
    # Read back from the database too
    stored = NavSnapshot.objects.get(fund=fund, date="2025-12-02")
    assert stored.nav_usd == D("2077405.3955078")


def test_nav_in_tenge_uses_the_official_rate_in_force_and_is_empty_without_one(bnb_history):
    fund, _ = bnb_history
    # Friday's rate stays in force over the weekend; a rate for a later day is not yet known.
    FxRate.objects.create(rate=D("512"), date=dt.date(2025, 11, 28))
    FxRate.objects.create(rate=D("507.5"), date=dt.date(2025, 12, 2))
    FxRate.objects.create(rate=D("499"), date=dt.date(2025, 12, 4))

    before = nav_snapshot_take(fund=fund, day=dt.date(2025, 11, 27))
    saturday = nav_snapshot_take(fund=fund, day=dt.date(2025, 11, 29))
    monday = nav_snapshot_take(fund=fund, day=dt.date(2025, 12, 1))
    tuesday = nav_snapshot_take(fund=fund, day=dt.date(2025, 12, 2))
    wednesday = nav_snapshot_take(fund=fund, day=dt.date(2025, 12, 3))

    assert (before.usd_kzt_rate, before.usd_kzt_rate_date, before.nav_kzt) == (None, None, None)
    assert (saturday.usd_kzt_rate, saturday.usd_kzt_rate_date) == (D("512"), dt.date(2025, 11, 28))
    assert saturday.nav_kzt == D("512000000")
    assert monday.usd_kzt_rate_date == dt.date(2025, 11, 28)
    assert monday.nav_kzt == D("1877576.7822266") * D("512")
    assert (tuesday.usd_kzt_rate, tuesday.usd_kzt_rate_date) == (D("507.5"), dt.date(2025, 12, 2))
    assert tuesday.nav_kzt == D("2077405.3955078") * D("507.5")
    assert wednesday.usd_kzt_rate_date == dt.date(2025, 12, 2)
    assert wednesday.nav_kzt == (D("1250000") + D("877034.6679688")) * D("507.5")
    tuesday.refresh_from_db()
    assert tuesday.nav_kzt == D("1054283238.2202085")


# ---------------------------------------------------------------------------------------------
# Admin: positions on the fund page, NAV history read-only
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def admin_web(client, db):
    return signed_in(client, UserFactory(username="siteadmin", is_staff=True, is_superuser=True))


def test_the_fund_admin_page_shows_the_positions_and_nav_now(alem, admin_web):
    proposal = approved_proposal(alem)
    fill(alem, proposal, ref="ord-1", quantity="400", price="600.00", fee="12.50")
    FxRate.objects.create(rate=D("512.5"), date=timezone.localdate())

    response = admin_web.get(reverse("admin:portfolio_fund_change", args=[alem.fund.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Positions" in page
    assert "USD 24759987.5" in page  # cash: 25,000,000 - 240,000 - 12.50
    assert "NAV: USD 24999989.5" in page  # cash + 400 x 600.005
    assert "KZT 12812494618.75" in page  # 24,999,989.5 x 512.5
    cells = [
        "400",  # quantity
        "600",  # average cost
        "240000",  # cost basis
        "600.005",  # consensus price
        "coingecko, binance",  # its sources, freshest first (the builder stored Binance first)
        "-",  # no flags
        "240002",  # market value 400 x 600.005
        "2",  # unrealized P&L
        "0.96%",  # share 240,002 / 24,999,989.5
    ]
    assert "".join(f"<td>{cell}</td>" for cell in cells) in re.sub(r">\s+<", "><", page)
    assert reverse("admin:portfolio_navsnapshot_changelist") in page


def test_the_fund_add_page_has_no_positions_section(admin_web):
    response = admin_web.get(reverse("admin:portfolio_fund_add"))

    assert response.status_code == 200
    assert "valuation now" not in response.content.decode()


def test_nav_snapshots_are_listed_and_read_only_in_the_admin(bnb_history, admin_web):
    fund, _ = bnb_history
    snapshot = nav_snapshot_take(fund=fund, day=dt.date(2025, 12, 2))
    taken_at = NavSnapshot.objects.get().taken_at

    changelist = admin_web.get(reverse("admin:portfolio_navsnapshot_changelist"))
    change = admin_web.get(reverse("admin:portfolio_navsnapshot_change", args=[snapshot.pk]))
    add = admin_web.get(reverse("admin:portfolio_navsnapshot_add"))
    post = admin_web.post(
        reverse("admin:portfolio_navsnapshot_change", args=[snapshot.pk]), {"nav_usd": "1"}
    )
    delete = admin_web.post(
        reverse("admin:portfolio_navsnapshot_delete", args=[snapshot.pk]), {"post": "yes"}
    )

    assert changelist.status_code == 200
    assert "2077405.3955078" in changelist.content.decode()
    assert change.status_code == 200
    assert "827405.3955078" in change.content.decode()  # the BNB position's market value
    assert (add.status_code, post.status_code, delete.status_code) == (403, 403, 403)
    stored = NavSnapshot.objects.get()
    assert (stored.nav_usd, stored.taken_at) == (D("2077405.3955078"), taken_at)
