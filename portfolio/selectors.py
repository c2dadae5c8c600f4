"""Reads of the books: cash, holdings and the latest prices. Callers scope by fund."""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.postgres.aggregates import JSONBAgg
from django.db.models import (
    DecimalField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    TextField,
    Value,
)
from django.db.models.functions import Cast, Coalesce, JSONObject
from django.utils import timezone
from guardian.shortcuts import get_objects_for_user

from portfolio.calculations import Valuation, to_reporting_currency, value_positions
from portfolio.models import (
    AccountPosition,
    Asset,
    CustodyAccount,
    Fund,
    FundingSource,
    FundRole,
    FxRate,
    LedgerEntry,
    NavSnapshot,
    Position,
)

ZERO = Decimal("0")

# Holding any role, or view_fund itself, lets a user see the fund.
VIEWING_PERMISSIONS = [f"portfolio.{role}" for role in FundRole.values] + ["portfolio.view_fund"]


def funds_for_user(user, roles: list[str] | None = None) -> QuerySet[Fund]:
    """Funds on which ``user`` holds any of ``roles`` (default: any role at all).

    Object permissions only: global permissions and superuser status grant no fund.
    """
    if not user.is_authenticated or not user.is_active:
        return Fund.objects.none()
    perms = [f"portfolio.{role}" for role in roles] if roles else VIEWING_PERMISSIONS
    return get_objects_for_user(
        user, perms, klass=Fund, any_perm=True, with_superuser=False, accept_global_perms=False
    )


def custody_accounts_with_holdings(fund: Fund) -> QuerySet[CustodyAccount]:
    """The fund's custody accounts, removed ones included, by name, each with its non-zero
    running positions (``AccountPosition``, the sums of its ledger entries) by symbol in
    ``holdings``."""
    held = AccountPosition.objects.exclude(quantity=0).select_related("asset")
    return (
        CustodyAccount.objects.filter(fund=fund)
        .order_by("name", "id")
        .prefetch_related(
            Prefetch("positions", queryset=held.order_by("asset__symbol"), to_attr="holdings")
        )
    )


@dataclass(frozen=True)
class Holding:
    asset_id: int
    symbol: str
    quantity: Decimal
    cost_usd: Decimal


def _ledger(fund: Fund, at: dt.datetime):
    return LedgerEntry.objects.filter(fund=fund, booked_at__lte=at)


def fund_cash_usd(fund: Fund, *, at: dt.datetime | None = None) -> Decimal:
    """US dollar cash: the fund's cash position, or the sum of its cash ledger entries booked by
    ``at`` when given."""
    if at is None:
        total = Position.objects.filter(fund=fund, asset__isnull=True).aggregate(s=Sum("quantity"))
    else:
        total = _ledger(fund, at).filter(asset__isnull=True).aggregate(s=Sum("quantity"))
    return total["s"] or ZERO


def fund_holdings(fund: Fund, *, at: dt.datetime | None = None) -> list[Holding]:
    """Non-zero holdings per asset (booked by ``at``), by symbol."""
    return fund_holdings_and_cash(fund, at=at)[0]


def fund_holdings_and_cash(
    fund: Fund, *, at: dt.datetime | None = None
) -> tuple[list[Holding], Decimal]:
    """``fund_holdings`` and ``fund_cash_usd`` together, from one query: of the running
    positions now, of the ledger's entries booked by ``at`` when given."""
    if at is None:
        rows = Position.objects.filter(fund=fund).values_list(
            "asset_id", "asset__symbol", "quantity", "cost_usd"
        )
    else:
        rows = (
            _ledger(fund, at)
            .values("asset_id", "asset__symbol")
            .annotate(quantity=Sum("quantity"), cost=Sum("value_usd"))
            .values_list("asset_id", "asset__symbol", "quantity", "cost")
        )
    holdings, cash = [], ZERO
    for asset_id, symbol, quantity, cost in rows.order_by("asset__symbol"):
        if asset_id is None:
            cash = quantity
        elif quantity != 0:
            holdings.append(Holding(asset_id, symbol, quantity, cost))
    return holdings, cash


@dataclass(frozen=True)
class FundValuation:
    """A fund valued at one moment, with the consensus behind each holding's price and the
    official USD/KZT rate in force that day."""

    at: dt.datetime
    valuation: Valuation
    consensus: dict  # asset id -> portfolio.prices.consensus.Consensus
    rate: FxRate | None

    @property
    def holdings_value_usd(self) -> Decimal | None:
        nav = self.valuation.nav_usd
        return None if nav is None else nav - self.valuation.cash_usd

    @property
    def nav_kzt(self) -> Decimal | None:
        return to_reporting_currency(self.valuation.nav_usd, self.rate.rate if self.rate else None)


def fund_valuation(fund: Fund, *, at: dt.datetime | None = None) -> FundValuation:
    """Positions, cash and NAV of ``fund`` at ``at`` (now by default).

    Holdings are the running positions (now) or the ledger booked by ``at``; each is valued at its
    consensus price at ``at`` (shown even when flagged; the flags travel with it). Queries: three
    now (``fund_valuations``), four at an earlier moment (the ledger, its assets, their prices,
    the rate), whatever the number of ledger entries or assets.
    """
    from portfolio.prices.selectors import consensus_for_assets

    if at is None:
        return fund_valuations([fund])[fund.pk]
    holdings, cash = fund_holdings_and_cash(fund, at=at)
    assets = Asset.objects.in_bulk([h.asset_id for h in holdings])
    consensus = consensus_for_assets(list(assets.values()), at=at)
    prices = {asset_id: c.price for asset_id, c in consensus.items()}
    valuation = value_positions(holdings, prices, cash)
    rate = official_rate(timezone.localdate(at))
    return FundValuation(at=at, valuation=valuation, consensus=consensus, rate=rate)


def fund_valuations(funds: Sequence[Fund]) -> dict[int, FundValuation]:
    """``fund_valuation`` now of each of ``funds``, by fund id, in three queries whatever their
    number: the running positions with their assets, the assets' prices, and the rate."""
    from portfolio.prices.selectors import consensus_for_assets

    at = timezone.now()
    holdings: dict[int, list[Holding]] = {fund.pk: [] for fund in funds}
    cash = dict.fromkeys(holdings, ZERO)
    assets = {}
    positions = Position.objects.filter(fund__in=list(holdings)).select_related("asset")
    for position in positions.order_by("asset__symbol"):
        if position.asset is None:
            cash[position.fund_id] = position.quantity
        elif position.quantity != 0:
            assets[position.asset_id] = position.asset
            holdings[position.fund_id].append(
                Holding(
                    position.asset_id, position.asset.symbol, position.quantity, position.cost_usd
                )
            )
    consensus = consensus_for_assets(list(assets.values()), at=at) if assets else {}
    prices = {asset_id: c.price for asset_id, c in consensus.items()}
    rate = official_rate(timezone.localdate(at))
    return {
        fund_id: FundValuation(
            at=at,
            valuation=value_positions(held, prices, cash[fund_id]),
            consensus={h.asset_id: consensus[h.asset_id] for h in held},
            rate=rate,
        )
        for fund_id, held in holdings.items()
    }


def nav_history(
    fund: Fund, *, start: dt.date | None = None, end: dt.date | None = None
) -> QuerySet[NavSnapshot]:
    """End-of-day NAV snapshots of ``fund`` from ``start`` to ``end`` inclusive, oldest first."""
    rows = NavSnapshot.objects.filter(fund=fund).order_by("date")
    if start is not None:
        rows = rows.filter(date__gte=start)
    if end is not None:
        rows = rows.filter(date__lte=end)
    return rows


def official_rate(day: dt.date, *, quote_currency: str = "KZT") -> FxRate | None:
    """The National Bank's USD rate in force on ``day``: that day's, or the last one before it
    (no rate is published on weekends and holidays)."""
    return (
        FxRate.objects.filter(base_currency="USD", quote_currency=quote_currency, date__lte=day)
        .order_by("-date")
        .first()
    )


# ---------------------------------------------------------------------------------------------
# The portfolio page
# ---------------------------------------------------------------------------------------------


def funding_sources_with_contributions(fund: Fund) -> QuerySet[FundingSource]:
    """The fund's funding sources by name, each annotated with ``contributed_usd``: the USD
    value of every contribution ledger entry naming it (cash, or assets at their value when
    contributed); zero when none. One query."""
    contributed = (
        LedgerEntry.objects.filter(
            fund=fund, kind=LedgerEntry.Kind.CONTRIBUTION, funding_source=OuterRef("pk")
        )
        .values("funding_source")
        .annotate(total=Sum("value_usd"))
        .values("total")
    )
    return (
        FundingSource.objects.filter(fund=fund)
        .annotate(
            contributed_usd=Coalesce(
                Subquery(contributed, output_field=DecimalField(max_digits=48, decimal_places=28)),
                Value(ZERO),
                output_field=DecimalField(max_digits=48, decimal_places=28),
            )
        )
        .order_by("name")
    )


@dataclass(frozen=True)
class AccountHoldings:
    """A custody account with its non-zero running balances (``AccountPosition``), by symbol."""

    account: CustodyAccount
    positions: list[AccountPosition]


def account_quantity(account_id: int, asset_id: int) -> Decimal:
    """What a custody account holds of an asset now: its running position (0 without one)."""
    held = AccountPosition.objects.filter(account_id=account_id, asset_id=asset_id)
    return held.values_list("quantity", flat=True).first() or Decimal("0")


def custody_accounts_with_positions(fund: Fund) -> list[AccountHoldings]:
    """The fund's active custody accounts by name, each with what it holds, and after them any
    removed account that still holds something (its coins are still the fund's).

    One query: every account of the fund with its non-zero balances gathered as JSON, the
    amounts as text so that no digit is lost on the way.
    """
    balance = JSONObject(
        asset_id="positions__asset_id",
        symbol="positions__asset__symbol",
        quantity=Cast("positions__quantity", TextField()),
        cost_usd=Cast("positions__cost_usd", TextField()),
    )
    accounts = CustodyAccount.objects.filter(fund=fund).annotate(
        held=JSONBAgg(balance, filter=Q(positions__quantity__gt=0) | Q(positions__quantity__lt=0))
    )
    result = []
    for account in sorted(accounts, key=lambda a: (not a.active, a.name)):
        positions = [
            AccountPosition(
                account=account,
                asset=Asset(pk=row["asset_id"], symbol=row["symbol"]),
                quantity=Decimal(row["quantity"]),
                cost_usd=Decimal(row["cost_usd"]),
            )
            for row in sorted(account.held or [], key=lambda row: row["symbol"])
        ]
        if account.active or positions:
            result.append(AccountHoldings(account, positions))
    return result


def holdings_outside_accounts(
    holdings: Sequence[Holding], accounts: Sequence[AccountHoldings]
) -> list[Holding]:
    """What the fund holds beyond its custody accounts' balances, per asset: each holding less
    what the accounts hold of it (coins booked before accounts existed, or without one); the
    holdings the accounts cover in full are left out."""
    in_accounts: dict[int, tuple[Decimal, Decimal]] = {}
    for entry in accounts:
        for position in entry.positions:
            quantity, cost = in_accounts.get(position.asset_id, (ZERO, ZERO))
            in_accounts[position.asset_id] = (
                quantity + position.quantity,
                cost + position.cost_usd,
            )
    outside = []
    for holding in holdings:
        quantity, cost = in_accounts.get(holding.asset_id, (ZERO, ZERO))
        if holding.quantity != quantity:
            outside.append(
                Holding(
                    holding.asset_id,
                    holding.symbol,
                    holding.quantity - quantity,
                    holding.cost_usd - cost,
                )
            )
    return outside
