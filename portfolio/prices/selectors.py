"""Reads of market data: the consensus price of an asset, recent quotes, provider pauses.

Prices are public market data, not fund data: nothing here is scoped to a user.
"""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from statistics import median

from django.conf import settings
from django.db import connection
from django.db.models import Max
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


# The newest USD quote of each (asset, source) pair at a moment: one probe of the
# price_newest_by_source index per pair (LATERAL), whatever the length of the price history.
# Written in SQL because the ORM's equivalent, a correlated subquery per source and column,
# took longer to compile than to run.
_LATEST_QUOTES_SQL = """
SELECT wanted.asset_id, newest.source, newest.price, newest.observed_at, newest.quote_currency
FROM unnest(%(assets)s::bigint[]) AS wanted(asset_id)
CROSS JOIN unnest(%(sources)s::varchar[]) AS source(name)
CROSS JOIN LATERAL (
    SELECT price.source, price.price, price.observed_at, price.quote_currency
    FROM portfolio_price AS price
    WHERE price.asset_id = wanted.asset_id
      AND price.source = source.name
      AND price.quote_currency = ANY(%(quotes)s::varchar[])
      AND price.observed_at <= %(at)s
    ORDER BY price.observed_at DESC, price.id DESC
    LIMIT 1
) AS newest
ORDER BY wanted.asset_id, array_position(%(sources)s::varchar[], newest.source)
"""


def latest_quotes_for_assets(assets: list[Asset], *, at: dt.datetime) -> dict[int, list[Quote]]:
    """The latest quote of each source observed no later than ``at``, for each of ``assets``,
    keyed by asset id (sources in ``Price.Source`` order).

    One query whatever the number of assets, and its cost does not grow with the length of the
    price history (``_LATEST_QUOTES_SQL``).
    """
    quotes: dict[int, list[Quote]] = {asset.pk: [] for asset in assets}
    if not quotes:
        return quotes
    with connection.cursor() as cursor:
        cursor.execute(
            _LATEST_QUOTES_SQL,
            {
                "assets": list(quotes),
                "sources": list(Price.Source.values),
                "quotes": list(USD_QUOTES),
                "at": at,
            },
        )
        for asset_id, source, price, observed_at, quote_currency in cursor.fetchall():
            quotes[asset_id].append(
                Quote(
                    source=source,
                    price=price,
                    observed_at=observed_at,
                    quote_currency=quote_currency,
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
    the asset that day (daily closes are stamped at one instant for every source). One query,
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
    for observed_at, price in rows.filter(observed_at__in=last_of_day).values_list(
        "observed_at", "price"
    ):
        by_day.setdefault(observed_at.astimezone(dt.UTC).date(), []).append(price)
    return [(day, median(prices)) for day, prices in sorted(by_day.items())]
