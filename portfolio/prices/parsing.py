"""Pure readers of the providers' documented response formats, exact to the digit.

Every reader takes the raw body (bytes) and returns ``Decimal`` values, or raises
``MalformedBody`` naming what was wrong. Nothing here touches the network or the database.

- Binance sends prices as JSON strings (``"612.34000000"``): read with ``Decimal(str)``.
- CoinGecko sends JSON numbers, sometimes in exponent form (``6.1234e-05``): the JSON is read
  with ``parse_float=Decimal`` so no number ever passes through a binary float.
- The National Bank of Kazakhstan sends XML: ``<item>`` with ``<title>`` (currency code),
  ``<description>`` (tenge for ``quant`` units) and ``<quant>``; the rate is description / quant.
"""

import datetime as dt
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from email.utils import parsedate_to_datetime

# Enough digits that the division of two prices is exact to far below a price's last place.
DIVISION_DIGITS = 50
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class MalformedBody(ValueError):
    """The body is not the documented format (an HTML page, truncated JSON, a wrong shape)."""


def _reject_constant(name: str):
    raise MalformedBody(f"non-finite number {name} in JSON")


def load_json(body: bytes):
    """JSON with every number as an exact ``Decimal``; NaN and Infinity are refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody("body is not UTF-8") from exc
    try:
        return json.loads(
            text, parse_float=Decimal, parse_int=Decimal, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at character {exc.pos}"
        raise MalformedBody(f"not JSON ({where}): {snippet(body)}") from exc


def snippet(body: bytes, limit: int = 120) -> str:
    """The start of a body, on one line, for failure records."""
    text = body[:limit].decode("utf-8", errors="replace")
    return " ".join(text.split()) + ("…" if len(body) > limit else "")


def positive_decimal(value, what: str, *, number: bool = False) -> Decimal:
    """A finite, positive ``Decimal`` from a JSON string or number (only a number when
    ``number``: the documented type), else ``MalformedBody``."""
    accepted = Decimal if number else str | Decimal
    if isinstance(value, bool) or not isinstance(value, accepted):
        kind = "number" if number else "decimal"
        raise MalformedBody(f"{what}: expected a {kind}, got {value!r}")
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise MalformedBody(f"{what}: {value!r} is not a decimal") from exc
    if not number.is_finite() or number <= 0:
        raise MalformedBody(f"{what}: {value!r} is not a positive price")
    return number


def _epoch_time(value, what: str, *, per_second: int = 1000) -> dt.datetime:
    """A UTC time from an integral JSON number of milliseconds (or seconds) since the epoch."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Decimal)
        or not value.is_finite()
        or value != value.to_integral_value()
    ):
        raise MalformedBody(f"{what}: expected a time since the epoch, got {value!r}")
    try:
        return EPOCH + dt.timedelta(milliseconds=int(value) * (1000 // per_second))
    except (OverflowError, OSError, ValueError) as exc:
        raise MalformedBody(f"{what}: {value!r} is out of range") from exc


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


# ---------------------------------------------------------------------------------------------
# Binance
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinanceError:
    code: int
    msg: str

    @property
    def unknown_symbol(self) -> bool:
        # -1121 "Invalid symbol."; -1100 "Illegal characters found in parameter 'symbol'".
        return self.code in (-1121, -1100)


def parse_binance_error(body: bytes) -> BinanceError | None:
    """Binance's error body ``{"code": -1121, "msg": "Invalid symbol."}``, or None."""
    try:
        data = load_json(body)
    except MalformedBody:
        return None
    if isinstance(data, dict) and isinstance(data.get("code"), Decimal):
        return BinanceError(int(data["code"]), str(data.get("msg", "")))
    return None


def parse_binance_ticker(body: bytes) -> dict[str, Decimal]:
    """``GET /api/v3/ticker/price``: ``[{"symbol": "BNBUSDT", "price": "612.34"}, …]`` (or one
    such object for ``symbol=``) to ``{"BNBUSDT": Decimal("612.34")}``."""
    data = load_json(body)
    items = [data] if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise MalformedBody(f"expected a list of tickers: {snippet(body)}")
    prices = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("symbol"), str):
            raise MalformedBody(f"ticker without a symbol: {item!r}")
        prices[item["symbol"]] = positive_decimal(item.get("price"), item["symbol"])
    return prices


@dataclass(frozen=True)
class Kline:
    open_time: dt.datetime
    close_time: dt.datetime
    close: Decimal


def parse_binance_klines(body: bytes) -> list[Kline]:
    """``GET /api/v3/klines``: arrays ``[open time, open, high, low, close, volume, close time,
    …]`` with prices as strings and times in milliseconds."""
    data = load_json(body)
    if not isinstance(data, list):
        raise MalformedBody(f"expected a list of klines: {snippet(body)}")
    klines = []
    for row in data:
        if not isinstance(row, list) or len(row) < 7:
            raise MalformedBody(f"kline with fewer than 7 fields: {row!r}")
        klines.append(
            Kline(
                open_time=_epoch_time(row[0], "kline open time"),
                close_time=_epoch_time(row[6], "kline close time"),
                close=positive_decimal(row[4], "kline close"),
            )
        )
    return klines


# ---------------------------------------------------------------------------------------------
# CoinGecko
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoinGeckoPrice:
    price: Decimal
    last_updated_at: dt.datetime | None


def parse_coingecko_simple_price(body: bytes, *, vs: str = "usd") -> dict[str, CoinGeckoPrice]:
    """``GET /api/v3/simple/price``: ``{"binancecoin": {"usd": 612.34, "last_updated_at":
    1718000000}}``. Ids CoinGecko does not know are simply absent from the answer."""
    data = load_json(body)
    if not isinstance(data, dict):
        raise MalformedBody(f"expected an object keyed by coin id: {snippet(body)}")
    if "status" in data and isinstance(data["status"], dict):
        raise MalformedBody(f"error object instead of prices: {snippet(body)}")
    prices = {}
    for coin_id, values in data.items():
        if not isinstance(values, dict) or vs not in values:
            raise MalformedBody(f"{coin_id}: no {vs} price in {values!r}")
        updated = values.get("last_updated_at")
        prices[coin_id] = CoinGeckoPrice(
            price=positive_decimal(values[vs], coin_id, number=True),
            last_updated_at=(
                _epoch_time(updated, f"{coin_id} last_updated_at", per_second=1)
                if updated is not None
                else None
            ),
        )
    return prices


def parse_coingecko_market_chart(body: bytes) -> list[tuple[dt.datetime, Decimal]]:
    """``GET /api/v3/coins/{id}/market_chart``: ``{"prices": [[ms, price], …], …}``."""
    data = load_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("prices"), list):
        raise MalformedBody(f"expected an object with a prices list: {snippet(body)}")
    points = []
    for point in data["prices"]:
        if not isinstance(point, list) or len(point) != 2:
            raise MalformedBody(f"price point is not [time, price]: {point!r}")
        when = _epoch_time(point[0], "point time")
        points.append((when, positive_decimal(point[1], "point", number=True)))
    return points


# ---------------------------------------------------------------------------------------------
# National Bank of Kazakhstan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NbkRates:
    """Official rates of one day: tenge for one unit of each currency."""

    date: dt.date | None
    rates: dict[str, Decimal]


def parse_nbk_rates(body: bytes) -> NbkRates:
    """``get_rates.cfm?fdate=DD.MM.YYYY``: ``<rates><date>05.07.2024</date><item><title>USD
    </title><description>475.81</description><quant>1</quant>…</item>…</rates>``.

    A day without rates comes back as ``<rates>`` with no ``<item>``: an empty ``rates``.
    """
    if b"<!DOCTYPE" in body[:1024].upper() or b"<!ENTITY" in body.upper():
        raise MalformedBody("XML with a document type or entities is refused")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise MalformedBody(f"not XML ({exc}): {snippet(body)}") from exc
    if root.tag != "rates":
        raise MalformedBody(f"expected <rates>, got <{root.tag}>: {snippet(body)}")
    day = None
    date_text = (root.findtext("date") or "").strip()
    if date_text:
        try:
            day = dt.datetime.strptime(date_text, "%d.%m.%Y").date()
        except ValueError as exc:
            raise MalformedBody(f"unreadable <date> {date_text!r}") from exc
    rates = {}
    for item in root.iter("item"):
        code = (item.findtext("title") or "").strip().upper()
        if not code:
            raise MalformedBody("<item> without a currency code")
        tenge = positive_decimal((item.findtext("description") or "").strip(), f"{code} rate")
        quant = positive_decimal((item.findtext("quant") or "").strip(), f"{code} quant")
        with localcontext() as ctx:
            ctx.prec = DIVISION_DIGITS
            rates[code] = tenge / quant
    return NbkRates(date=day, rates=rates)
