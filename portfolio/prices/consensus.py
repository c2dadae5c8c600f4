"""The consensus price of an asset: pure rules over plain values, no database.

The consensus is the median of the fresh quotes, one quote per source (its latest). It carries
flags, and a flagged consensus cannot back an approval or an execution:

- ``missing``: no source has ever priced the asset (there is no price at all);
- ``stale``: the freshest quote is older than the staleness limit (the price shown is then the
  freshest quote, for information only). A source may have a limit of its own: the official
  rate behind a pegged asset is published once per business day;
- ``divergent``: the fresh quotes are further apart than the divergence limit, measured as
  (highest − lowest) / median;
- ``single_source``: only one source is fresh, so nothing corroborates it. Pegged assets are
  exempt: their one source is the official rate (the peg), not a market quote.

``portfolio.prices.selectors.consensus_for`` loads the quotes and calls ``consensus_of``.
"""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, localcontext

from django.utils.translation import gettext_lazy as _

MISSING = "missing"
STALE = "stale"
DIVERGENT = "divergent"
SINGLE_SOURCE = "single_source"
FLAGS = (MISSING, STALE, DIVERGENT, SINGLE_SOURCE)

# Each flag in plain words, for the pages that show why a price cannot back an approval.
FLAG_WORDS = {
    MISSING: _("No source has ever priced this asset."),
    STALE: _("The freshest quote is older than the staleness limit."),
    DIVERGENT: _("The sources disagree by more than the divergence limit."),
    SINGLE_SOURCE: _("Only one source is fresh, so nothing corroborates it."),
}

# Digits kept by the median and the spread: exact for any two stored prices.
_DIGITS = 60


@dataclass(frozen=True)
class Quote:
    """The latest price of an asset from one source."""

    source: str
    price: Decimal
    observed_at: dt.datetime
    quote_currency: str = "USD"


@dataclass(frozen=True)
class QuoteSeen:
    """A quote as the consensus judged it: its age at the time and whether it was fresh."""

    source: str
    price: Decimal
    quote_currency: str
    observed_at: dt.datetime
    age: dt.timedelta
    fresh: bool


@dataclass(frozen=True)
class Consensus:
    """The consensus price of one asset at ``at``, the quotes it rests on, and its flags."""

    asset: str
    at: dt.datetime
    price: Decimal | None
    quotes: tuple[QuoteSeen, ...]
    flags: tuple[str, ...]
    # Age of the freshest quote; None without quotes.
    age: dt.timedelta | None
    # (highest − lowest) / median of the fresh quotes; None with fewer than two.
    spread: Decimal | None
    stale_after: dt.timedelta
    max_divergence: Decimal

    @property
    def usable(self) -> bool:
        """True when the price may back an approval or an execution: present and unflagged."""
        return self.price is not None and not self.flags

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources whose quotes made the price."""
        return tuple(q.source for q in self.quotes if q.fresh)

    def as_json(self) -> dict:
        """JSON-ready, decimals as strings: what a decision's evidence records."""
        return {
            "asset": self.asset,
            "at": self.at.isoformat(),
            "price_usd": None if self.price is None else str(self.price),
            "usable": self.usable,
            "flags": list(self.flags),
            "age_seconds": None if self.age is None else int(self.age.total_seconds()),
            "spread": None if self.spread is None else str(self.spread),
            "stale_after_seconds": int(self.stale_after.total_seconds()),
            "max_divergence": str(self.max_divergence),
            "quotes": [
                {
                    "source": q.source,
                    "price": str(q.price),
                    "quote_currency": q.quote_currency,
                    "observed_at": q.observed_at.isoformat(),
                    "age_seconds": int(q.age.total_seconds()),
                    "fresh": q.fresh,
                }
                for q in self.quotes
            ],
        }


def median(values: list[Decimal]) -> Decimal:
    """The exact median: the middle value, or the mean of the two middle values."""
    if not values:
        raise ValueError("the median of no values is undefined")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        return (ordered[middle - 1] + ordered[middle]) / 2


def spread(values: list[Decimal]) -> Decimal | None:
    """(highest − lowest) / median; None for fewer than two values."""
    if len(values) < 2:
        return None
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        return (max(values) - min(values)) / median(values)


def consensus_of(
    asset: str,
    quotes: list[Quote],
    *,
    at: dt.datetime,
    stale_after: dt.timedelta,
    max_divergence: Decimal,
    pegged: bool = False,
    stale_after_by_source: dict[str, dt.timedelta] | None = None,
) -> Consensus:
    """Judge the latest quote of each source at ``at``.

    Quotes observed after ``at`` are ignored (they were not known then); so is any quote but
    the latest of its source. Freshness is inclusive: a quote exactly ``stale_after`` old is
    fresh. Divergence is strict: a spread equal to ``max_divergence`` passes.
    ``stale_after_by_source`` overrides ``stale_after`` for the sources it names.
    """
    limits = stale_after_by_source or {}
    latest: dict[str, Quote] = {}
    for quote in quotes:
        if quote.observed_at > at:
            continue
        held = latest.get(quote.source)
        if held is None or quote.observed_at > held.observed_at:
            latest[quote.source] = quote
    seen = tuple(
        sorted(
            (
                QuoteSeen(
                    source=q.source,
                    price=q.price,
                    quote_currency=q.quote_currency,
                    observed_at=q.observed_at,
                    age=at - q.observed_at,
                    fresh=at - q.observed_at <= limits.get(q.source, stale_after),
                )
                for q in latest.values()
            ),
            key=lambda q: (q.age, q.source),
        )
    )
    common = {
        "asset": asset,
        "at": at,
        "stale_after": stale_after,
        "max_divergence": max_divergence,
    }
    if not seen:
        return Consensus(price=None, quotes=(), flags=(MISSING,), age=None, spread=None, **common)
    fresh = [q.price for q in seen if q.fresh]
    if not fresh:
        # Shown for information; the stale flag keeps it from backing anything.
        return Consensus(
            price=seen[0].price, quotes=seen, flags=(STALE,), age=seen[0].age, spread=None, **common
        )
    flags = []
    price_spread = spread(fresh)
    if price_spread is not None and price_spread > max_divergence:
        flags.append(DIVERGENT)
    if len(fresh) == 1 and not pegged:
        flags.append(SINGLE_SOURCE)
    return Consensus(
        price=median(fresh),
        quotes=seen,
        flags=tuple(flags),
        age=seen[0].age,
        spread=price_spread,
        **common,
    )
