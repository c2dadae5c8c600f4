"""Decimal columns with the precision set once in ``settings.ALEM_DECIMALS``."""

from django.conf import settings
from django.db import models

# Digits for arithmetic on amounts: wide enough that the sum or product of two amount columns
# (quantity x price + fee, executed notional + cost, notional - executed) is exact, never
# rounded to the default 28 digits. Use it as ``decimal.localcontext(prec=EXACT_DIGITS)``.
EXACT_DIGITS = 2 * settings.ALEM_DECIMALS["amount"][0]


def _decimal_field(kind: str, **kwargs) -> models.DecimalField:
    max_digits, decimal_places = settings.ALEM_DECIMALS[kind]
    return models.DecimalField(max_digits=max_digits, decimal_places=decimal_places, **kwargs)


def MoneyField(**kwargs) -> models.DecimalField:  # noqa: N802 - reads like a field class
    """US dollars entered by people: notionals, contributions, limits (cents)."""
    return _decimal_field("money", **kwargs)


def PriceField(**kwargs) -> models.DecimalField:  # noqa: N802
    """A unit price in USD."""
    return _decimal_field("price", **kwargs)


def QuantityField(**kwargs) -> models.DecimalField:  # noqa: N802
    """An asset quantity, with 18 decimals."""
    return _decimal_field("quantity", **kwargs)


def AmountField(**kwargs) -> models.DecimalField:  # noqa: N802
    """A computed amount (quantity x price + fee, ledger movements), kept exact."""
    return _decimal_field("amount", **kwargs)


def RatioField(**kwargs) -> models.DecimalField:  # noqa: N802
    """A share or tolerance as a fraction of one (0.25 is 25%)."""
    return _decimal_field("ratio", **kwargs)
