"""Pure valuation rules: positions, shares and NAV from holdings and prices, exactly.

Nothing here touches the database; ``portfolio.selectors`` feeds plain values in.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

ZERO = Decimal("0")


@dataclass(frozen=True)
class Position:
    """A holding valued at a price. Values are None when no usable price exists."""

    asset_id: int
    symbol: str
    quantity: Decimal
    cost_basis_usd: Decimal
    price_usd: Decimal | None
    market_value_usd: Decimal | None
    unrealized_pnl_usd: Decimal | None
    share: Decimal | None

    @property
    def average_cost_usd(self) -> Decimal:
        """Cost basis per unit (a quotient, so rounded by Decimal's 28-digit context)."""
        return self.cost_basis_usd / self.quantity if self.quantity else ZERO


@dataclass(frozen=True)
class Valuation:
    cash_usd: Decimal
    positions: tuple[Position, ...]
    # None when some holding has no price: a partial NAV would understate the fund.
    nav_usd: Decimal | None
    unpriced: tuple[str, ...]


def value_positions(
    holdings: Iterable, prices: Mapping[int, Decimal], cash_usd: Decimal
) -> Valuation:
    """Value ``holdings`` (asset_id, symbol, quantity, cost_usd) at ``prices`` by asset id.

    NAV is cash plus the market value of every holding; each position's share is its market
    value over NAV. Sums and products are exact.
    """
    holdings = list(holdings)
    unpriced = tuple(h.symbol for h in holdings if prices.get(h.asset_id) is None)
    values = {
        h.asset_id: h.quantity * prices[h.asset_id]
        for h in holdings
        if prices.get(h.asset_id) is not None
    }
    nav = None if unpriced else cash_usd + sum(values.values(), ZERO)
    positions = []
    for h in holdings:
        value = values.get(h.asset_id)
        positions.append(
            Position(
                asset_id=h.asset_id,
                symbol=h.symbol,
                quantity=h.quantity,
                cost_basis_usd=h.cost_usd,
                price_usd=prices.get(h.asset_id),
                market_value_usd=value,
                unrealized_pnl_usd=None if value is None else value - h.cost_usd,
                share=(value / nav) if value is not None and nav else None,
            )
        )
    return Valuation(cash_usd, tuple(positions), nav, unpriced)


def to_reporting_currency(amount_usd: Decimal | None, usd_rate: Decimal | None) -> Decimal | None:
    """USD amount in the reporting currency at an official rate (units of it per USD)."""
    if amount_usd is None or usd_rate is None:
        return None
    return amount_usd * usd_rate


def decimal_string(value: Decimal | int | str) -> str:
    """``value`` in plain notation without trailing fractional zeros, every digit kept.

    ``Decimal("100")`` stays "100" (``normalize`` would give "1E+2"); ``Decimal("-0.00")`` is
    "0". Floats are refused: they are not exact.
    """
    if isinstance(value, float):
        raise TypeError("Amounts are Decimals, never floats.")
    number = value if isinstance(value, Decimal) else Decimal(str(value))
    if not number.is_finite():
        raise ValueError(f"{number} is not an amount.")
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text
