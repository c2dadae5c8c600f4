"""The reconciliation's rules over plain values: dust, when a difference opens a break, and
reading a custodian's statement. No database.

When a difference opens a break (``opens_break``):

- a difference within dust (``|observed − ledger| ≤ dust``, dust included) is no break;
- while a break of the account and asset is open, no other opens (the database holds one open
  break per account and asset): the open one waits for its explanation;
- after a break was explained, a later difference opens a new break only if it differs from the
  explained break's difference by more than dust: the same unexplained amount seen again is what
  was already explained. Once an observation has matched the ledger (within dust) after the
  explained break, any difference beyond dust opens a new one, the same amount included.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _

# A statement's columns, in this order.
STATEMENT_COLUMNS = ("asset", "balance", "as_of")
# Decimals a statement's balance may carry (the ledger's quantities keep 18).
QUANTITY_PLACES = settings.ALEM_DECIMALS["quantity"][1]
QUANTITY_DIGITS = settings.ALEM_DECIMALS["quantity"][0]
# A statement larger than this is refused before it is read (a few thousand lines).
STATEMENT_MAX_BYTES = 256 * 1024


def dust_for(symbol: str) -> Decimal:
    """The largest difference of ``symbol`` that is not a break (``ALEM_RECONCILIATION_DUST``)."""
    dust = settings.ALEM_RECONCILIATION_DUST.get(symbol, settings.ALEM_RECONCILIATION_DUST_DEFAULT)
    return Decimal(dust)


def opens_break(
    difference: Decimal,
    dust: Decimal,
    *,
    open_break: bool,
    explained_difference: Decimal | None,
    matched_since: bool,
) -> bool:
    """Whether an observation whose ``difference`` (observed − ledger) is this opens a break.

    ``open_break``: a break of the account and asset is open. ``explained_difference``: the
    difference of the latest break, explained, if any. ``matched_since``: an observation matched
    the ledger within dust after that break opened.
    """
    if abs(difference) <= dust or open_break:
        return False
    if explained_difference is None or matched_since:
        return True
    return abs(difference - explained_difference) > dust


@dataclass(frozen=True)
class StatementLine:
    line: int
    asset: str
    balance: Decimal
    as_of: dt.datetime


def statement_parse(
    content: bytes, *, known_assets: set[str], now: dt.datetime
) -> list[StatementLine]:
    """The lines of a statement CSV: a header ``asset,balance,as_of``, then one line per asset
    with its symbol, its balance as a decimal string (at most 18 decimals, never negative, no
    exponent) and the moment it is as of (ISO 8601; a date alone means the end of that day in
    the project's time zone; never in the future).

    Raises ``ValidationError`` naming the first bad line; nothing is half-read.
    """
    if len(content) > STATEMENT_MAX_BYTES:
        raise ValidationError(
            _("The statement is larger than %(size)s KB.") % {"size": STATEMENT_MAX_BYTES // 1024}
        )
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValidationError(_("The statement is not UTF-8 text.")) from error
    rows = list(csv.reader(io.StringIO(text)))
    while rows and not any(cell.strip() for cell in rows[-1]):
        rows.pop()
    if not rows or [cell.strip().lower() for cell in rows[0]] != list(STATEMENT_COLUMNS):
        raise ValidationError(
            _("Line 1: the header must be %(columns)s.") % {"columns": ",".join(STATEMENT_COLUMNS)}
        )
    if len(rows) == 1:
        raise ValidationError(_("The statement has no balances."))
    lines, seen = [], set()
    for number, row in enumerate(rows[1:], start=2):
        lines.append(_statement_line(number, row, known_assets=known_assets, now=now))
        if lines[-1].asset in seen:
            raise ValidationError(
                _("Line %(line)s: %(asset)s is listed twice.")
                % {"line": number, "asset": lines[-1].asset}
            )
        seen.add(lines[-1].asset)
    return lines


def _statement_line(number: int, row: list[str], *, known_assets: set[str], now) -> StatementLine:
    def refuse(problem: str):
        return ValidationError(
            _("Line %(line)s: %(problem)s") % {"line": number, "problem": problem}
        )

    if len(row) != len(STATEMENT_COLUMNS):
        raise refuse(_("expected 3 values (asset, balance, as_of), found %(n)s.") % {"n": len(row)})
    symbol, raw_balance, raw_as_of = (cell.strip() for cell in row)
    if symbol not in known_assets:
        raise refuse(_("%(asset)s is not an asset Alem knows.") % {"asset": symbol or "''"})
    balance = _balance(raw_balance)
    if balance is None:
        raise refuse(
            _(
                "the balance %(value)s is not a decimal number of at most %(places)s decimals, "
                "zero or more."
            )
            % {"value": repr(raw_balance), "places": QUANTITY_PLACES}
        )
    as_of = _moment(raw_as_of)
    if as_of is None:
        raise refuse(
            _("as_of %(value)s is not an ISO 8601 date or time.") % {"value": repr(raw_as_of)}
        )
    if as_of > now:
        raise refuse(_("as_of %(value)s is in the future.") % {"value": raw_as_of})
    return StatementLine(number, symbol, balance, as_of)


def _balance(raw: str) -> Decimal | None:
    if not raw or not all(c.isdigit() or c == "." for c in raw) or raw.count(".") > 1:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    exponent = value.as_tuple().exponent
    if exponent < -QUANTITY_PLACES or len(raw.replace(".", "").lstrip("0")) > QUANTITY_DIGITS:
        return None
    return value


def _moment(raw: str) -> dt.datetime | None:
    try:
        if len(raw) == 10:
            day = dt.date.fromisoformat(raw)
            return timezone.make_aware(dt.datetime.combine(day, dt.time.max))
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)
