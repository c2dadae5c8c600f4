"""Reads of market data: the consensus price of an asset, recent quotes, provider pauses.

Prices are public market data, not fund data: nothing here is scoped to a user.
"""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from statistics import median

from django.conf import settings
from django.db.models import Max, OuterRef, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from portfolio.models import Asset, FetchFailure, Price
from portfolio.prices.consensus import Consensus, Quote, consensus_of

# Quote currencies taken as US dollars. Binance pairs are quoted in USDT; a USDT that slips off
# its peg shows up as a divergence from CoinGecko's USD price.
USD_QUOTES = ("USD", "USDT")


def stale_after() -> dt.timedelta:
    """How old the freshest market quote may be."""
    return dt.timedelta(seconds=settings.ALEM_PRICE_STALE_AFTER_SECONDS)


def stale_after_by_source() -> dict[str, dt.timedelta]:
    """Sources with a staleness limit of their own: the National Bank's daily official rate,
    behind the prices of pegged assets."""
    return {Price.Source.NBK: dt.timedelta(seconds=settings.ALEM_PRICE_PEG_STALE_AFTER_SECONDS)}


def max_divergence() -> Decimal:
    return Decimal(settings.ALEM_PRICE_MAX_DIVERGENCE)


def latest_quotes(asset: Asset, *, at: dt.datetime) -> list[Quote]:
    """The latest quote of each source observed no later than ``at``."""
    return latest_quotes_for_assets([asset], at=at)[asset.pk]


def latest_quotes_for_assets(assets: list[Asset], *, at: dt.datetime) -> dict[int, list[Quote]]:
    """The latest quote of each source observed no later than ``at``, for each of ``assets``,
    keyed by asset id.

    One query whatever the number of assets: per source, correlated subqueries read the newest
    row through the (asset, source, quote, observed_at) index, so the cost does not grow with
    the length of the price history either.
    """
    columns = {}
    for source in Price.Source.values:
        newest = Price.objects.filter(
            asset=OuterRef("pk"), source=source, quote_currency__in=USD_QUOTES, observed_at__lte=at
        ).order_by("-observed_at", "-id")
        for column in ("price", "observed_at", "quote_currency"):
            columns[f"{source}__{column}"] = Subquery(newest.values(column)[:1])
    rows = Asset.objects.filter(pk__in=[asset.pk for asset in assets]).annotate(**columns)
    quotes: dict[int, list[Quote]] = {asset.pk: [] for asset in assets}
    for row in rows.values("pk", *columns):
        for source in Price.Source.values:
            if row[f"{source}__price"] is not None:
                quotes[row["pk"]].append(
                    Quote(
                        source=source,
                        price=row[f"{source}__price"],
                        observed_at=row[f"{source}__observed_at"],
                        quote_currency=row[f"{source}__quote_currency"],
                    )
                )
    return quotes


def _consensus(asset: Asset, quotes: list[Quote], at: dt.datetime) -> Consensus:
    return consensus_of(
        asset.symbol,
        quotes,
        at=at,
        stale_after=stale_after(),
        max_divergence=max_divergence(),
        pegged=bool(asset.peg_currency),
        stale_after_by_source=stale_after_by_source(),
    )


def consensus_for(asset: Asset, *, at: dt.datetime | None = None) -> Consensus:
    """The consensus price of ``asset`` at ``at`` (now by default), with its quotes, age and
    flags; ``.usable`` says whether it may back an approval or an execution."""
    at = at or timezone.now()
    return _consensus(asset, latest_quotes(asset, at=at), at)


def consensus_for_assets(
    assets: list[Asset], *, at: dt.datetime | None = None
) -> dict[int, Consensus]:
    """``consensus_for`` of several assets at one moment, keyed by asset id (one query)."""
    at = at or timezone.now()
    quotes = latest_quotes_for_assets(assets, at=at)
    return {asset.pk: _consensus(asset, quotes[asset.pk], at) for asset in assets}


@dataclass(frozen=True)
class PriceOverview:
    asset: Asset
    consensus: Consensus
    # Recent stored prices of each source that priced the asset, newest first.
    recent: dict[str, list[Price]]


def price_overview(*, symbol: str, per_source: int = 10) -> PriceOverview:
    """Recent prices per source and the consensus now, for ``GET /api/v1/prices/?asset=``.

    Raises ``Asset.DoesNotExist`` for an unknown symbol.
    """
    asset = Asset.objects.get(symbol=symbol.upper())
    recent = {}
    for source in Price.Source.values:
        rows = list(
            Price.objects.filter(asset=asset, source=source).order_by("-observed_at", "-id")[
                :per_source
            ]
        )
        if rows:
            recent[source] = rows
    return PriceOverview(asset=asset, consensus=consensus_for(asset), recent=recent)


def provider_pause(provider: str, *, now: dt.datetime | None = None) -> FetchFailure | None:
    """The failure that paused ``provider`` (a 429 or 418 with Retry-After) if that pause has
    not passed yet; None when the provider may be called."""
    now = now or timezone.now()
    return (
        FetchFailure.objects.filter(provider=provider, paused_until__gt=now)
        .order_by("-paused_until")
        .first()
    )


def daily_price_closes(
    asset: Asset, *, days: int = 90, now: dt.datetime | None = None
) -> list[tuple[dt.date, Decimal]]:
    """One US dollar price per UTC day of the last ``days`` days, oldest first, for charts.

    A day's price is the median of the sources' quotes at the last moment any source priced
    the asset that day (daily closes are stamped at one instant for every source). Two queries,
    whatever the number of days or quotes.
    """
    now = now or timezone.now()
    rows = Price.objects.filter(
        asset=asset, quote_currency__in=USD_QUOTES, observed_at__gt=now - dt.timedelta(days=days)
    )
    last_of_day = (
        rows.annotate(day=TruncDate("observed_at", tzinfo=dt.UTC))
        .values("day")
        .annotate(last=Max("observed_at"))
        .values_list("last", flat=True)
    )
    by_day: dict[dt.date, list[Decimal]] = {}
    for observed_at, price in rows.filter(observed_at__in=list(last_of_day)).values_list(
        "observed_at", "price"
    ):
        by_day.setdefault(observed_at.astimezone(dt.UTC).date(), []).append(price)
    return [(day, median(prices)) for day, prices in sorted(by_day.items())]
