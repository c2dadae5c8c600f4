"""Writes to the books. Governance decides whether a write may happen; these only book it."""

import datetime as dt
from decimal import Decimal

from django.utils import timezone

from portfolio import selectors
from portfolio.calculations import decimal_string
from portfolio.models import Asset, CustodyAccount, Fund, FundingSource, LedgerEntry, NavSnapshot


def ledger_entry_book(
    *,
    fund: Fund,
    kind: str,
    quantity: Decimal,
    value_usd: Decimal,
    asset: Asset | None = None,
    account: CustodyAccount | None = None,
    funding_source: FundingSource | None = None,
    reference: str = "",
    memo: str = "",
    booked_at: dt.datetime | None = None,
    booked_by=None,
) -> LedgerEntry:
    """Book one immutable ledger entry. ``asset=None`` books US dollar cash; ``account`` is the
    custody account the coins are in.

    The database refuses zero quantities, a cash value that differs from its quantity, negative
    contributions, a reference used twice in one fund, cash in a custody account and an entry
    that would take an account below zero.
    """
    return LedgerEntry.objects.create(
        fund=fund,
        kind=kind,
        asset=asset,
        account=account,
        quantity=quantity,
        value_usd=value_usd,
        funding_source=funding_source,
        reference=reference,
        memo=memo,
        booked_at=booked_at or timezone.now(),
        booked_by=booked_by,
    )


def end_of_day(day: dt.date) -> dt.datetime:
    """The last instant of ``day`` in the project's time zone (Asia/Almaty)."""
    return timezone.make_aware(dt.datetime.combine(day, dt.time.max))


def nav_snapshot_take(*, fund: Fund, day: dt.date) -> NavSnapshot:
    """Value ``fund`` at the end of ``day`` (or now, if the day is not over) and store it.

    Holdings are the ledger booked by then, valued at the consensus price of that moment; NAV
    in KZT uses the official rate in force on the day. Retaking a day replaces its snapshot.
    """
    valued_at = min(end_of_day(day), timezone.now())
    current = selectors.fund_valuation(fund, at=valued_at)
    valuation, rate = current.valuation, current.rate

    def exact(value):
        return None if value is None else decimal_string(value)

    positions = [
        {
            "asset": p.symbol,
            "quantity": exact(p.quantity),
            "cost_basis_usd": exact(p.cost_basis_usd),
            "price_usd": exact(p.price_usd),
            "market_value_usd": exact(p.market_value_usd),
            "price_flags": list(current.consensus[p.asset_id].flags),
        }
        for p in valuation.positions
    ]
    snapshot, _ = NavSnapshot.objects.update_or_create(
        fund=fund,
        date=day,
        defaults={
            "valued_at": valued_at,
            "cash_usd": valuation.cash_usd,
            "holdings_value_usd": current.holdings_value_usd,
            "nav_usd": valuation.nav_usd,
            "usd_kzt_rate": rate.rate if rate else None,
            "usd_kzt_rate_date": rate.date if rate else None,
            "nav_kzt": current.nav_kzt,
            "positions": positions,
        },
    )
    return snapshot


def nav_snapshots_take_due(*, now: dt.datetime | None = None) -> int:
    """Snapshot every fund for today so far and for yesterday (final); returns how many."""
    today = timezone.localdate(now or timezone.now())
    taken = 0
    for fund in Fund.objects.all():
        for day in (today - dt.timedelta(days=1), today):
            nav_snapshot_take(fund=fund, day=day)
            taken += 1
    return taken
