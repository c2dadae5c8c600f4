"""Reading the books: cash and holdings summed from the ledger, and the latest prices."""

import datetime as dt
from decimal import Decimal

import pytest

from portfolio.models import LedgerEntry
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
# Latest prices
# ---------------------------------------------------------------------------------------------
