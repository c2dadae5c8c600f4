"""HTTP clients of the market-data providers: Binance, CoinGecko and the National Bank of
Kazakhstan. One batched request per provider per run where the API allows it.

The clients only talk HTTP and parse (``portfolio.prices.parsing``); they never touch the
database. Every way a request can fail ends in ``FetchError`` with a reason from
``FetchFailure.Reason``; ``portfolio.prices.services`` records it.

Retries (``ProviderClient.get``): timeouts, connection errors and HTTP 5xx are retried with
exponential backoff, up to ``ALEM_PRICE_HTTP_ATTEMPTS`` requests. HTTP 429 waits for its
``Retry-After`` when that is short, otherwise gives up with a pause; HTTP 418 (Binance's ban)
gives up at once with a pause. A pause stops the provider until it has passed.
"""

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
from django.conf import settings
from django.utils import timezone

from portfolio.prices import parsing
from portfolio.prices.models import FetchFailure, MarketDataProvider
from portfolio.prices.parsing import MalformedBody, snippet

Reason = FetchFailure.Reason
USER_AGENT = "Alem/1.0 (state crypto reserve fund; market data)"
DAY = dt.timedelta(days=1)


class FetchError(Exception):
    """A request to a provider failed; nothing from it may be stored.

    ``pause_seconds`` is set when the provider asked us to stay away (429 or 418).
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        http_status: int | None = None,
        pause_seconds: float | None = None,
        key: str = "",
    ):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.http_status = http_status
        self.pause_seconds = pause_seconds
        self.key = key

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True)
class Observed:
    price: Decimal
    observed_at: dt.datetime


@dataclass
class LatestQuotes:
    """A provider's answer to one batched request: prices per provider id, and the ids it did
    not know (with why)."""

    quote_currency: str
    prices: dict[str, Observed] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)


class ProviderClient:
    """One provider's HTTP client with bounded retries. ``requests`` counts requests made.

    Each subclass says what it serves: ``official_rates`` (the National Bank's daily rates) or
    market prices, with ``asset_key`` naming an asset the provider's way, ``latest`` for the
    newest quotes and ``history`` for daily prices. The fetch services call these, never asking
    which provider they hold.
    """

    provider: str = ""
    official_rates = False

    @classmethod
    def asset_key(cls, asset) -> str:
        """The provider's id for ``asset`` ("" when the provider does not list it)."""
        return ""

    def history(self, key: str, *, start: dt.datetime, days: int) -> list["Observed"]:
        """Daily prices of ``key`` from ``start`` (``days`` days ago) until now."""
        raise NotImplementedError(f"{type(self).__name__} has no market history")

    def __init__(
        self,
        *,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.timeout = settings.ALEM_PRICE_TIMEOUT_SECONDS
        self.max_attempts = max(1, settings.ALEM_PRICE_HTTP_ATTEMPTS)
        self.backoff = settings.ALEM_PRICE_BACKOFF_SECONDS
        self.backoff_max = settings.ALEM_PRICE_BACKOFF_MAX_SECONDS
        self.retry_after_max_wait = settings.ALEM_PRICE_RETRY_AFTER_MAX_WAIT_SECONDS
        self.default_pause = settings.ALEM_PRICE_DEFAULT_PAUSE_SECONDS
        self.sleep = sleep
        self.requests = 0
        self._http = http or httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            headers={"User-Agent": USER_AGENT, **self.extra_headers()},
            follow_redirects=True,
        )

    def extra_headers(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def backoff_seconds(self, attempt: int) -> float:
        """Wait after failed attempt ``attempt`` (1-based): base, 2 × base, 4 × base… capped."""
        return min(self.backoff * 2 ** (attempt - 1), self.backoff_max)

    def get(self, url: str, params: dict | None = None) -> httpx.Response:
        """GET with retries. Returns any response below 500 except 418 and 429 (the caller
        reads 4xx bodies: they name unknown symbols); raises ``FetchError`` otherwise."""
        error = None
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            self.requests += 1
            try:
                response = self._http.get(url, params=params)
            except httpx.TimeoutException:
                error = FetchError(Reason.TIMEOUT, f"no answer within {self.timeout:g} s")
            except httpx.TransportError as exc:
                error = FetchError(Reason.CONNECTION, f"{type(exc).__name__}: {exc}")
            else:
                status = response.status_code
                retry_after = parsing.parse_retry_after(
                    response.headers.get("Retry-After"), now=timezone.now()
                )
                if status == 418:
                    raise self._paused(Reason.BANNED, response, retry_after)
                if status == 429:
                    wait = retry_after if retry_after is not None else self.backoff_seconds(attempt)
                    if not last and wait <= self.retry_after_max_wait:
                        self.sleep(wait)
                        continue
                    raise self._paused(Reason.RATE_LIMITED, response, retry_after)
                if status < 500:
                    return response
                error = FetchError(
                    Reason.SERVER_ERROR,
                    f"HTTP {status}: {snippet(response.content)}",
                    http_status=status,
                )
            if not last:
                self.sleep(self.backoff_seconds(attempt))
        error.detail = f"{error.detail} (after {self.max_attempts} attempts)"
        raise error

    def _paused(
        self, reason: str, response: httpx.Response, retry_after: float | None
    ) -> FetchError:
        """The provider told us to stay away (418 or 429): pause it for its Retry-After, or for
        the default pause when it named none."""
        return FetchError(
            reason,
            f"HTTP {response.status_code} (Retry-After {response.headers.get('Retry-After')}): "
            f"{snippet(response.content)}",
            http_status=response.status_code,
            pause_seconds=retry_after if retry_after else self.default_pause,
        )

    def http_error(self, response: httpx.Response, key: str = "") -> FetchError:
        return FetchError(
            Reason.HTTP_ERROR,
            f"HTTP {response.status_code}: {snippet(response.content)}",
            http_status=response.status_code,
            key=key,
        )

    @staticmethod
    def parsed(response: httpx.Response, parse: Callable, **kwargs):
        try:
            return parse(response.content, **kwargs)
        except MalformedBody as exc:
            raise FetchError(Reason.MALFORMED, str(exc), http_status=response.status_code) from exc


# ---------------------------------------------------------------------------------------------
# Binance
# ---------------------------------------------------------------------------------------------


class BinanceClient(ProviderClient):
    """Binance spot public REST. Pairs are quoted in USDT."""

    provider = MarketDataProvider.BINANCE
    quote_currency = "USDT"
    KLINES_LIMIT = 1000

    @property
    def base_url(self) -> str:
        return settings.BINANCE_BASE_URL

    def _failure(self, response: httpx.Response, key: str = "") -> FetchError | None:
        """None for a 200; else why Binance refused, naming unknown symbols as such."""
        if response.status_code == 200:
            return None
        error = parsing.parse_binance_error(response.content)
        if error is not None and error.unknown_symbol:
            return FetchError(
                Reason.UNKNOWN_SYMBOL,
                f"Binance error {error.code}: {error.msg}",
                http_status=response.status_code,
                key=key,
            )
        return self.http_error(response, key)

    def latest(self, symbols: list[str]) -> LatestQuotes:
        """``GET /api/v3/ticker/price?symbols=["BNBUSDT",…]``: one request for every pair.

        Binance refuses the whole batch when one symbol is unknown; then each pair is asked on
        its own so the others are still priced.
        """
        result = LatestQuotes(quote_currency=self.quote_currency)
        if not symbols:
            return result
        response = self.get(
            f"{self.base_url}/api/v3/ticker/price",
            {"symbols": json.dumps(symbols, separators=(",", ":"))},
        )
        failure = self._failure(response)
        if failure is not None:
            if failure.reason != Reason.UNKNOWN_SYMBOL:
                raise failure
            if len(symbols) == 1:
                result.unknown[symbols[0]] = failure.detail
                return result
            for symbol in symbols:
                self._latest_one(symbol, result)
            return result
        prices = self.parsed(response, parsing.parse_binance_ticker)
        observed_at = timezone.now()
        for symbol in symbols:
            if symbol in prices:
                result.prices[symbol] = Observed(prices[symbol], observed_at)
            else:
                result.unknown[symbol] = "absent from Binance's answer"
        return result

    def _latest_one(self, symbol: str, result: LatestQuotes) -> None:
        response = self.get(f"{self.base_url}/api/v3/ticker/price", {"symbol": symbol})
        failure = self._failure(response, symbol)
        if failure is not None:
            if failure.reason != Reason.UNKNOWN_SYMBOL:
                raise failure
            result.unknown[symbol] = failure.detail
            return
        prices = self.parsed(response, parsing.parse_binance_ticker)
        if symbol not in prices:
            result.unknown[symbol] = "absent from Binance's answer"
            return
        result.prices[symbol] = Observed(prices[symbol], timezone.now())

    @classmethod
    def asset_key(cls, asset) -> str:
        return asset.binance_symbol.strip().upper()

    def history(self, key: str, *, start: dt.datetime, days: int) -> list[Observed]:
        return self.daily_closes(key, start=start)

    def daily_closes(self, symbol: str, *, start: dt.datetime) -> list[Observed]:
        """Daily closes from ``GET /api/v3/klines?interval=1d`` since ``start``, in pages of
        1000, each observed at its candle's close time. Today's unfinished candle is left out."""
        now = timezone.now()
        closes = []
        start_ms = int(start.timestamp() * 1000)
        while True:
            response = self.get(
                f"{self.base_url}/api/v3/klines",
                {
                    "symbol": symbol,
                    "interval": "1d",
                    "startTime": start_ms,
                    "limit": self.KLINES_LIMIT,
                },
            )
            failure = self._failure(response, symbol)
            if failure is not None:
                raise failure
            klines = self.parsed(response, parsing.parse_binance_klines)
            closes.extend(Observed(k.close, k.close_time) for k in klines if k.close_time <= now)
            if len(klines) < self.KLINES_LIMIT:
                return closes
            next_ms = int((klines[-1].open_time + DAY).timestamp() * 1000)
            if next_ms <= start_ms:
                raise FetchError(Reason.MALFORMED, "klines do not advance", key=symbol)
            start_ms = next_ms


# ---------------------------------------------------------------------------------------------
# CoinGecko
# ---------------------------------------------------------------------------------------------


class CoinGeckoClient(ProviderClient):
    """CoinGecko public API v3, prices in USD."""

    provider = MarketDataProvider.COINGECKO
    quote_currency = "USD"

    @property
    def base_url(self) -> str:
        return settings.COINGECKO_BASE_URL

    def extra_headers(self) -> dict[str, str]:
        key = settings.COINGECKO_API_KEY
        return {"x-cg-demo-api-key": key} if key else {}

    def latest(self, coin_ids: list[str]) -> LatestQuotes:
        """``GET /api/v3/simple/price?ids=…&vs_currencies=usd``: one request for every coin.
        CoinGecko leaves unknown ids out of its answer."""
        result = LatestQuotes(quote_currency=self.quote_currency)
        if not coin_ids:
            return result
        response = self.get(
            f"{self.base_url}/api/v3/simple/price",
            {
                "ids": ",".join(coin_ids),
                "vs_currencies": "usd",
                "include_last_updated_at": "true",
                "precision": "full",
            },
        )
        if response.status_code != 200:
            raise self.http_error(response)
        prices = self.parsed(response, parsing.parse_coingecko_simple_price)
        received_at = timezone.now()
        for coin_id in coin_ids:
            if coin_id not in prices:
                result.unknown[coin_id] = "absent from CoinGecko's answer"
                continue
            quote = prices[coin_id]
            # CoinGecko says when it last updated the price; a clock running ahead of ours
            # must not date a quote in the future.
            observed_at = min(quote.last_updated_at or received_at, received_at)
            result.prices[coin_id] = Observed(quote.price, observed_at)
        return result

    @classmethod
    def asset_key(cls, asset) -> str:
        return asset.coingecko_id.strip()

    def history(self, key: str, *, start: dt.datetime, days: int) -> list[Observed]:
        return self.daily_prices(key, days=days)

    def daily_prices(self, coin_id: str, *, days: int) -> list[Observed]:
        """``GET /api/v3/coins/{id}/market_chart?vs_currency=usd&days=N&interval=daily``."""
        response = self.get(
            f"{self.base_url}/api/v3/coins/{coin_id}/market_chart",
            {"vs_currency": "usd", "days": days, "interval": "daily", "precision": "full"},
        )
        if response.status_code == 404:
            raise FetchError(
                Reason.UNKNOWN_SYMBOL,
                f"HTTP 404: {snippet(response.content)}",
                http_status=404,
                key=coin_id,
            )
        if response.status_code != 200:
            raise self.http_error(response, coin_id)
        now = timezone.now()
        return [
            Observed(price, min(when, now))
            for when, price in self.parsed(response, parsing.parse_coingecko_market_chart)
        ]


# ---------------------------------------------------------------------------------------------
# National Bank of Kazakhstan
# ---------------------------------------------------------------------------------------------


class NbkClient(ProviderClient):
    """The National Bank of Kazakhstan's daily official rates (tenge per unit)."""

    provider = MarketDataProvider.NBK
    official_rates = True

    @property
    def url(self) -> str:
        return settings.NBK_RATES_URL

    def rates(self, day: dt.date) -> parsing.NbkRates:
        """``GET get_rates.cfm?fdate=DD.MM.YYYY``; a day without rates is ``NO_RATES``."""
        response = self.get(self.url, {"fdate": day.strftime("%d.%m.%Y")})
        if response.status_code != 200:
            raise self.http_error(response)
        rates = self.parsed(response, parsing.parse_nbk_rates)
        if not rates.rates:
            raise FetchError(
                Reason.NO_RATES, f"no rates published for {day:%d.%m.%Y}", http_status=200
            )
        return parsing.NbkRates(date=rates.date or day, rates=rates.rates)


CLIENTS: dict[str, type[ProviderClient]] = {
    MarketDataProvider.BINANCE: BinanceClient,
    MarketDataProvider.COINGECKO: CoinGeckoClient,
    MarketDataProvider.NBK: NbkClient,
}


def client_for(provider: str, **kwargs) -> ProviderClient:
    return CLIENTS[provider](**kwargs)
