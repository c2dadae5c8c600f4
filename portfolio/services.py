"""Writes to the books. Governance decides whether a write may happen; these only book it."""

import csv
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from portfolio import selectors
from portfolio.calculations import decimal_string
from portfolio.exceptions import PriceImportError
from portfolio.models import Asset, Fund, FundingSource, LedgerEntry, NavSnapshot, Price


def ledger_entry_book(
    *,
    fund: Fund,
    kind: str,
    quantity: Decimal,
    value_usd: Decimal,
    asset: Asset | None = None,
    funding_source: FundingSource | None = None,
    reference: str = "",
    memo: str = "",
    booked_at: dt.datetime | None = None,
    booked_by=None,
) -> LedgerEntry:
    """Book one immutable ledger entry. ``asset=None`` books US dollar cash.

    The database refuses zero quantities, a cash value that differs from its quantity, negative
    contributions and a reference used twice in one fund.
    """
    return LedgerEntry.objects.create(
        fund=fund,
        kind=kind,
        asset=asset,
        quantity=quantity,
        value_usd=value_usd,
        funding_source=funding_source,
        reference=reference,
        memo=memo,
        booked_at=booked_at or timezone.now(),
        booked_by=booked_by,
    )


@dataclass(frozen=True)
class DailyClose:
    day: dt.date
    close: Decimal


def parse_daily_closes(path: Path) -> list[DailyClose]:
    """Read a Yahoo-style daily CSV by header name (``Date`` or ``date``, and ``Close``).

    Raises ``PriceImportError`` naming the line of the first bad row; a file is all or nothing.
    """
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise PriceImportError(f"Cannot open {path}: {exc.strerror}.") from exc
    with handle:
        reader = csv.DictReader(handle)
        headers = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "date" not in headers or "close" not in headers:
            raise PriceImportError(f"{path.name}: the header needs Date and Close columns.")
        closes = []
        for line, row in enumerate(reader, start=2):
            try:
                day = dt.date.fromisoformat(row[headers["date"]].strip()[:10])
                close = Decimal(row[headers["close"]].strip())
            except (ValueError, InvalidOperation, AttributeError) as exc:
                raise PriceImportError(f"{path.name}, line {line}: unreadable row.") from exc
            if not close.is_finite() or close <= 0:
                raise PriceImportError(f"{path.name}, line {line}: the close must be positive.")
            closes.append(DailyClose(day, close))
    return closes


def price_history_import(
    *, asset: Asset, closes: list[DailyClose], source: str = Price.Source.YAHOO
) -> int:
    """Store daily closes as prices observed at 23:59:59 UTC of each day; returns rows added.

    Idempotent: days already stored for this asset and source are left as they are.
    """
    from portfolio.fields import PriceField

    places = PriceField().decimal_places
    quantum = Decimal(1).scaleb(-places)
    rows = [
        Price(
            asset=asset,
            source=source,
            quote_currency="USD",
            price=close.close.quantize(quantum),
            observed_at=dt.datetime.combine(close.day, dt.time(23, 59, 59), tzinfo=dt.UTC),
        )
        for close in closes
    ]
    with transaction.atomic():
        before = Price.objects.filter(asset=asset, source=source).count()
        Price.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
        return Price.objects.filter(asset=asset, source=source).count() - before


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
