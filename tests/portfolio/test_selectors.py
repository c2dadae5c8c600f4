"""Reading the books: cash and holdings summed from the ledger, and the latest prices."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count, Sum

from portfolio.models import LedgerEntry, Position
from portfolio.selectors import (
    Holding,
    fund_cash_usd,
    fund_holdings,
)
from portfolio.services import ledger_entry_book
from tests.factories import AssetFactory, FundFactory

D = Decimal
K = LedgerEntry.Kind


@pytest.fixture
def fund(db):
    return FundFactory()


def cash(fund, amount: str, kind=K.CONTRIBUTION):
    ledger_entry_book(fund=fund, kind=kind, quantity=D(amount), value_usd=D(amount))


def units(fund, asset, quantity: str, value: str, kind=K.BUY):
    ledger_entry_book(fund=fund, kind=kind, asset=asset, quantity=D(quantity), value_usd=D(value))


def at(day: int, hour: int = 12) -> dt.datetime:
    return dt.datetime(2025, 1, day, hour, tzinfo=dt.UTC)


# ---------------------------------------------------------------------------------------------
# Cash
# ---------------------------------------------------------------------------------------------


def test_a_fund_without_entries_has_zero_cash(fund):
    assert fund_cash_usd(fund) == D("0")
    assert isinstance(fund_cash_usd(fund), Decimal)


def test_cash_sums_the_funds_cash_entries_only(fund):
    bnb = AssetFactory(symbol="BNB")
    cash(fund, "25000000.00")
    cash(fund, "0.10")
    cash(fund, "-4000000.25", kind=K.BUY)
    cash(fund, "-12.50", kind=K.FEE)
    units(fund, bnb, "6666.5", "3999900.00")  # holdings are not cash
    cash(FundFactory(), "999.00")  # another fund's cash is not ours

    total = fund_cash_usd(fund)

    assert total == D("20999987.35")
    assert isinstance(total, Decimal)


# ---------------------------------------------------------------------------------------------
# Holdings
# ---------------------------------------------------------------------------------------------


def test_holdings_sum_quantity_and_cost_per_asset_ordered_by_symbol(fund):
    sol = AssetFactory(symbol="SOL")
    bnb = AssetFactory(symbol="BNB")
    units(fund, sol, "100", "15000.00", kind=K.CONTRIBUTION)
    units(fund, bnb, "10.5", "6300.00")
    units(fund, bnb, "-2.5", "-1500.00", kind=K.SELL)
    cash(fund, "1000.00")

    holdings = fund_holdings(fund)

    assert [(h.symbol, h.asset_id) for h in holdings] == [("BNB", bnb.pk), ("SOL", sol.pk)]
    assert holdings[0] == Holding(bnb.pk, "BNB", D("8"), D("4800.00"))
    assert holdings[1] == Holding(sol.pk, "SOL", D("100"), D("15000.00"))


def test_holdings_keep_eighteen_decimals(fund):
    bnb = AssetFactory(symbol="BNB")
    units(fund, bnb, "10.5", "6300.00")
    units(fund, bnb, "0.000000000000000001", "0.0000000000000006")

    [holding] = fund_holdings(fund)

    assert holding.quantity == D("10.500000000000000001")
    assert holding.cost_usd == D("6300.0000000000000006")


def test_a_holding_sold_to_zero_is_not_listed(fund):
    bnb = AssetFactory(symbol="BNB")
    eth = AssetFactory(symbol="ETH")
    units(fund, bnb, "3", "1800.00")
    units(fund, bnb, "-3", "-1950.00", kind=K.SELL)
    units(fund, eth, "1", "3000.00")

    assert [h.symbol for h in fund_holdings(fund)] == ["ETH"]


def test_holdings_of_another_fund_are_not_ours(fund):
    units(FundFactory(), AssetFactory(symbol="BTC"), "1", "60000.00")

    assert fund_holdings(fund) == []


# ---------------------------------------------------------------------------------------------
# Running positions: the database keeps them equal to the ledger's sums
# ---------------------------------------------------------------------------------------------


def ledger_sums(fund) -> dict:
    rows = (
        LedgerEntry.objects.filter(fund=fund)
        .values("asset_id")
        .annotate(quantity=Sum("quantity"), cost=Sum("value_usd"), entries=Count("id"))
    )
    return {r["asset_id"]: (r["quantity"], r["cost"], r["entries"]) for r in rows}


def positions(fund) -> dict:
    rows = Position.objects.filter(fund=fund).values_list(
        "asset_id", "quantity", "cost_usd", "entries"
    )
    return {asset_id: (quantity, cost, entries) for asset_id, quantity, cost, entries in rows}


def test_each_entry_booked_is_added_to_its_position_exactly(fund):
    bnb = AssetFactory(symbol="BNB")
    cash(fund, "25000000.00")
    cash(fund, "-0.000000000000000000000000001", kind=K.FEE)
    units(fund, bnb, "10.500000000000000001", "6300.00")
    units(fund, bnb, "-10.500000000000000001", "-6300.00", kind=K.SELL)
    cash(FundFactory(), "999.00")

    assert positions(fund) == ledger_sums(fund)
    assert positions(fund)[bnb.pk][:2] == (D("0"), D("0"))
    assert positions(fund)[None][0] == D("24999999.999999999999999999999999999")


def test_entries_written_around_the_service_still_move_the_positions(fund):
    """The trigger sees every insert: bulk_create and raw SQL as well as the service."""
    bnb = AssetFactory(symbol="BNB")
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            fund=fund, kind=K.BUY, asset=bnb, quantity=D("2"), value_usd=D("1200"), booked_at=now
        )
        for _ in range(3)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO portfolio_ledgerentry (fund_id, kind, asset_id, quantity, value_usd,"
            " reference, memo, booked_at) VALUES (%s, 'contribution', NULL, 5, 5, '', '', %s)",
            [fund.pk, now],
        )

    assert (
        positions(fund)
        == ledger_sums(fund)
        == {
            bnb.pk: (D("6"), D("3600"), 3),
            None: (D("5"), D("5"), 1),
        }
    )


def test_the_books_now_read_the_positions_and_the_books_at_a_moment_read_the_ledger(fund):
    bnb = AssetFactory(symbol="BNB")
    ledger_entry_book(
        fund=fund, kind=K.BUY, asset=bnb, quantity=D("1"), value_usd=D("600"), booked_at=at(1)
    )
    ledger_entry_book(
        fund=fund, kind=K.BUY, asset=bnb, quantity=D("2"), value_usd=D("1300"), booked_at=at(3)
    )

    assert fund_holdings(fund) == [Holding(bnb.pk, "BNB", D("3"), D("1900"))]
    assert fund_holdings(fund, at=at(2)) == [Holding(bnb.pk, "BNB", D("1"), D("600"))]


def test_valuations_now_from_the_positions_equal_valuations_from_the_ledger(fund):
    from django.utils import timezone

    from portfolio.selectors import fund_valuation, fund_valuations
    from tests.factories import PriceFactory

    bnb, btc = AssetFactory(symbol="BNB"), AssetFactory(symbol="BTC")
    other = FundFactory()
    for asset, price in ((bnb, "600"), (btc, "60000")):
        for source in ("binance", "coingecko", "yahoo"):
            PriceFactory(asset=asset, source=source, price=D(price))
    cash(fund, "1000000")
    units(fund, bnb, "10", "5000")
    units(other, btc, "0.5", "25000")
    units(other, bnb, "1", "550")
    moment = timezone.now() + dt.timedelta(seconds=1)

    now = fund_valuations([fund, other, FundFactory()])

    for each in (fund, other):
        assert now[each.pk].valuation == fund_valuation(each, at=moment).valuation
    assert now[fund.pk].valuation.nav_usd == D("1006000")
    assert set(now[other.pk].consensus) == {bnb.pk, btc.pk}


# ---------------------------------------------------------------------------------------------
# Latest prices
# ---------------------------------------------------------------------------------------------
