"""Booking the ledger."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from portfolio.models import LedgerEntry
from portfolio.services import ledger_entry_book
from tests.factories import AssetFactory, FundFactory, FundingSourceFactory

D = Decimal
K = LedgerEntry.Kind


# ---------------------------------------------------------------------------------------------
# The ledger and its constraints
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def fund(db):
    return FundFactory()


def test_booking_cash_stores_one_immutable_row(fund):
    source = FundingSourceFactory(fund=fund)

    entry = ledger_entry_book(
        fund=fund,
        kind=K.CONTRIBUTION,
        quantity=D("1000.50"),
        value_usd=D("1000.50"),
        funding_source=source,
        memo="Tranche",
    )

    entry.refresh_from_db()
    assert (entry.fund, entry.kind, entry.asset, entry.quantity, entry.value_usd) == (
        fund,
        K.CONTRIBUTION,
        None,
        D("1000.50"),
        D("1000.50"),
    )
    assert entry.booked_at is not None
    assert (entry.funding_source, entry.memo, entry.reference) == (source, "Tranche", "")


def test_booking_keeps_the_given_booking_time(fund):
    when = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)

    entry = ledger_entry_book(
        fund=fund, kind=K.CONTRIBUTION, quantity=D("1"), value_usd=D("1"), booked_at=when
    )

    entry.refresh_from_db()
    assert entry.booked_at == when


def refused(fund, **values):
    before = LedgerEntry.objects.count()
    with pytest.raises(IntegrityError), transaction.atomic():
        ledger_entry_book(fund=fund, **values)
    assert LedgerEntry.objects.count() == before


def test_the_ledger_refuses_a_zero_quantity(fund):
    refused(fund, kind=K.BUY, asset=AssetFactory(symbol="BNB"), quantity=D("0"), value_usd=D("0"))


def test_the_ledger_refuses_cash_whose_value_differs_from_its_amount(fund):
    refused(fund, kind=K.CONTRIBUTION, quantity=D("100.00"), value_usd=D("99.99"))


@pytest.mark.parametrize(
    ("quantity", "value"), [(D("-1"), D("-1")), (D("5"), D("-600"))], ids=["negative", "value"]
)
def test_the_ledger_refuses_a_negative_contribution(fund, quantity, value):
    refused(
        fund,
        kind=K.CONTRIBUTION,
        asset=AssetFactory(symbol="BNB"),
        quantity=quantity,
        value_usd=value,
    )


def test_the_ledger_refuses_a_reference_twice_in_one_fund(fund):
    ledger_entry_book(fund=fund, kind=K.FEE, quantity=D("-1"), value_usd=D("-1"), reference="0xabc")

    refused(fund, kind=K.FEE, quantity=D("-2"), value_usd=D("-2"), reference="0xabc")


def test_the_same_reference_may_appear_in_another_fund_and_empty_ones_repeat(fund):
    other = FundFactory()
    ledger_entry_book(fund=fund, kind=K.FEE, quantity=D("-1"), value_usd=D("-1"), reference="r1")

    ledger_entry_book(fund=other, kind=K.FEE, quantity=D("-1"), value_usd=D("-1"), reference="r1")
    ledger_entry_book(fund=fund, kind=K.FEE, quantity=D("-1"), value_usd=D("-1"))
    ledger_entry_book(fund=fund, kind=K.FEE, quantity=D("-1"), value_usd=D("-1"))

    assert LedgerEntry.objects.count() == 4
