"""Display of exact amounts: grouped per the active language, never rounded.

``{{ value|money }}`` shows at least two decimals and every further digit the value holds;
``{{ value|quantity }}`` shows the digits the value holds and no trailing zeros;
``{{ ratio|percent }}`` a ratio as a percentage, with the same care. Groups and the
decimal mark follow the language (``1,234.50`` in English, ``1 234,50`` in Russian and Kazakh).
"""

from decimal import Decimal, InvalidOperation

from django import template
from django.conf import settings
from django.utils.formats import number_format

register = template.Library()


def _exact(value, min_places: int) -> str:
    if value is None or value == "":
        return ""
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    if not number.is_finite():
        return str(value)
    # Significant places: the value's own, without trailing zeros, but never fewer than asked.
    exponent = number.normalize().as_tuple().exponent
    places = max(min_places, -exponent if isinstance(exponent, int) and exponent < 0 else 0)
    return number_format(number, decimal_pos=places, use_l10n=True, force_grouping=True)


@register.filter
def money(value) -> str:
    """A US dollar (or tenge) amount: two decimals at least, more if the value has them."""
    return _exact(value, 2)


@register.filter
def quantity(value) -> str:
    """An asset quantity or a unit price: every significant decimal, none invented."""
    return _exact(value, 0)


@register.filter
def percent(value) -> str:
    """A ratio (0.25) as a percentage (25.00): two decimals at least, every further digit the
    ratio holds, grouped per language; the caller adds the sign."""
    if value is None or value == "":
        return ""
    return _exact(Decimal(str(value)) * 100, 2)


@register.filter
def share(value) -> str:
    """A computed share of a whole (a position's part of NAV) as a percentage: rounded to the
    precision of the stored ratios (six decimals of one), then shown as ``percent`` does."""
    if value is None or value == "":
        return ""
    places = settings.ALEM_DECIMALS["ratio"][1]
    return percent(Decimal(str(value)).quantize(Decimal(10) ** -places))


@register.filter
def shortened(value, keep: int = 6) -> str:
    """A long address or reference as its first and last ``keep`` characters around an
    ellipsis (the page gives the whole value beside it); short ones as they are."""
    text = str(value or "")
    return text if len(text) <= 2 * keep + 3 else f"{text[:keep]}…{text[-keep:]}"
