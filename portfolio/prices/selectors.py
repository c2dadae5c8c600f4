"""Reads of market data: the consensus price of an asset, recent quotes, provider pauses.

Prices are public market data, not fund data: nothing here is scoped to a user.
"""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
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
    """The latest quote of each source observed no later than ``at`` (one query per source)."""
    quotes = []
    for source in Price.Source.values:
        row = (
            Price.objects.filter(
                asset=asset, source=source, quote_currency__in=USD_QUOTES, observed_at__lte=at
            )
            .order_by("-observed_at", "-id")
            .values("price", "observed_at", "quote_currency")
            .first()
        )
        if row is not None:
            quotes.append(Quote(source=source, **row))
    return quotes


def consensus_for(asset: Asset, *, at: dt.datetime | None = None) -> Consensus:
    """The consensus price of ``asset`` at ``at`` (now by default), with its quotes, age and
    flags; ``.usable`` says whether it may back an approval or an execution."""
    at = at or timezone.now()
    return consensus_of(
        asset.symbol,
        latest_quotes(asset, at=at),
        at=at,
        stale_after=stale_after(),
        max_divergence=max_divergence(),
        pegged=bool(asset.peg_currency),
        stale_after_by_source=stale_after_by_source(),
    )


def consensus_for_assets(
    assets: list[Asset], *, at: dt.datetime | None = None
) -> dict[int, Consensus]:
    """``consensus_for`` of several assets at one moment, keyed by asset id."""
    at = at or timezone.now()
    return {asset.id: consensus_for(asset, at=at) for asset in assets}


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
