"""A fake market-data server: a real HTTP server on 127.0.0.1, in a thread, that speaks the
documented formats of Binance, CoinGecko and the National Bank of Kazakhstan, error modes
included. Tests point ``BINANCE_BASE_URL``, ``COINGECKO_BASE_URL`` and ``NBK_RATES_URL`` at it.

    with FakeMarket() as market:
        market.binance["BNBUSDT"] = "612.34000000"
        market.coingecko["binancecoin"] = "612.1"          # a JSON number, written as is
        market.fail("binance", "429", retry_after=120)     # the next Binance request only
        ...
        market.requests_to("binance")                      # what was asked

Routes, under ``/binance``, ``/coingecko`` and ``/nbk``:
- ``GET /binance/api/v3/ticker/price?symbols=["A","B"]`` (or ``symbol=A``): prices as strings;
  any unknown symbol refuses the whole request with ``{"code":-1121,"msg":"Invalid symbol."}``.
- ``GET /binance/api/v3/klines?symbol=&interval=1d&startTime=&limit=``: daily candles from the
  start day to today (today's unfinished candle included, as Binance does), at most ``limit``.
- ``GET /coingecko/api/v3/simple/price?ids=a,b&vs_currencies=usd``: JSON numbers written
  exactly as stored (``6.1234e-05`` stays so); unknown ids are left out.
- ``GET /coingecko/api/v3/coins/{id}/market_chart?vs_currency=usd&days=N``: one point per day
  at 00:00 UTC and a last point now; an unknown id is ``404 {"error":"coin not found"}``.
- ``GET /nbk/rss/get_rates.cfm?fdate=DD.MM.YYYY``: the day's ``<rates>``; a day without rates
  has no ``<item>``, as the bank's feed answers for such days.

Failure modes for ``fail(provider, mode, times=1, retry_after=None)``: ``"429"`` and ``"418"``
(with the provider's body and ``Retry-After`` when given), ``"500"``, ``"503"`` (an HTML page),
``"timeout"`` (sleeps ``timeout_sleep`` seconds, beyond the client's timeout, then answers),
``"html"`` (200 with an HTML page), ``"truncated"`` (200 with the body cut in half).
"""

import datetime as dt
import hashlib
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

DAY_MS = 86_400_000
MODES = ("429", "418", "500", "503", "timeout", "html", "truncated")
PROVIDERS = ("binance", "coingecko", "nbk")

HTML_PAGE = (
    b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    b"<body><h1>Checking your browser before accessing the site.</h1></body></html>"
)


@dataclass(frozen=True)
class Request:
    provider: str
    path: str
    params: dict[str, str]


@dataclass(frozen=True)
class Failure:
    mode: str
    retry_after: str | None


def history_price(key: str, day: dt.date) -> str:
    """A deterministic daily price as a decimal string: a base per asset plus a daily step."""
    base = int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) % 900 + 100
    return f"{base + day.toordinal() % 97}.{day.toordinal() % 10000:04d}"


class FakeMarket:
    def __init__(self, *, timeout_sleep: float = 1.0):
        # Binance symbol -> price string; CoinGecko id -> JSON number text.
        self.binance: dict[str, str] = {}
        self.coingecko: dict[str, str] = {}
        # CoinGecko's last_updated_at (seconds); None answers with the current time.
        self.coingecko_updated_at: int | None = None
        # Symbols and ids that have history (klines, market charts) without a current price.
        self.binance_history: set[str] = set()
        self.coingecko_history: set[str] = set()
        # National Bank: rates of given days, {code: (description, quant)}; other days get
        # ``nbk_default`` unless listed in ``nbk_closed`` (no rates that day).
        self.nbk: dict[dt.date, dict[str, tuple[str, str]]] = {}
        self.nbk_default: dict[str, tuple[str, str]] | None = None
        self.nbk_closed: set[dt.date] = set()
        self.timeout_sleep = timeout_sleep
        self.requests: list[Request] = []
        self._failures: dict[str, deque[Failure]] = {p: deque() for p in PROVIDERS}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> "FakeMarket":
        handler = type("Handler", (_Handler,), {"market": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeMarket":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def urls(self) -> dict[str, str]:
        """The settings (and environment variables) that point Alem at this server."""
        return {
            "BINANCE_BASE_URL": f"{self.url}/binance",
            "COINGECKO_BASE_URL": f"{self.url}/coingecko",
            "NBK_RATES_URL": f"{self.url}/nbk/rss/get_rates.cfm",
        }

    def fail(
        self, provider: str, mode: str, *, times: int = 1, retry_after: int | str | None = None
    ) -> None:
        """Answer the next ``times`` requests to ``provider`` in ``mode``."""
        if provider not in PROVIDERS or mode not in MODES:
            raise ValueError(f"unknown provider or mode: {provider} {mode}")
        with self._lock:
            for _ in range(times):
                self._failures[provider].append(
                    Failure(mode, None if retry_after is None else str(retry_after))
                )

    def requests_to(self, provider: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.provider == provider]

    def _next_failure(self, provider: str) -> Failure | None:
        with self._lock:
            queue = self._failures[provider]
            return queue.popleft() if queue else None

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    # -- answers: (status, content type, body, headers) --------------------------------------

    def answer(self, provider: str, path: str, params: dict[str, str]):
        if provider == "binance":
            return self._binance(path, params)
        if provider == "coingecko":
            return self._coingecko(path, params)
        return self._nbk(path, params)

    def _binance(self, path, params):
        if path == "/api/v3/ticker/price":
            if "symbols" in params:
                try:
                    symbols = json.loads(params["symbols"])
                except json.JSONDecodeError:
                    return _binance_error(-1100, "Illegal characters found in parameter 'symbols'")
            elif "symbol" in params:
                symbols = [params["symbol"]]
            else:
                return _json(200, [{"symbol": s, "price": p} for s, p in self.binance.items()])
            if any(s not in self.binance for s in symbols):
                return _binance_error(-1121, "Invalid symbol.")
            items = [{"symbol": s, "price": self.binance[s]} for s in symbols]
            return _json(200, items[0] if "symbol" in params else items)
        if path == "/api/v3/klines":
            symbol = params.get("symbol", "")
            if symbol not in self.binance and symbol not in self.binance_history:
                return _binance_error(-1121, "Invalid symbol.")
            limit = min(int(params.get("limit", 500)), 1000)
            now_ms = int(time.time() * 1000)
            start_ms = int(params.get("startTime", now_ms - 499 * DAY_MS))
            open_ms = start_ms - start_ms % DAY_MS
            if open_ms < start_ms:
                open_ms += DAY_MS
            rows = []
            while open_ms <= now_ms and len(rows) < limit:
                day = dt.datetime.fromtimestamp(open_ms / 1000, tz=dt.UTC).date()
                close = history_price(symbol, day)
                rows.append(
                    [open_ms, close, close, close, close, "1000.00000000", open_ms + DAY_MS - 1,
                     "612340.00000000", 100, "500.00000000", "306170.00000000", "0"]
                )  # fmt: skip
                open_ms += DAY_MS
            return _json(200, rows)
        return _binance_error(-1000, "Unknown path.", status=404)

    def _coingecko(self, path, params):
        if path == "/api/v3/simple/price":
            updated = self.coingecko_updated_at or int(time.time())
            ids = [i for i in params.get("ids", "").split(",") if i]
            parts = [
                f'"{coin}":{{"usd":{self.coingecko[coin]},"last_updated_at":{updated}}}'
                for coin in ids
                if coin in self.coingecko
            ]
            return 200, "application/json", ("{" + ",".join(parts) + "}").encode(), {}
        if path.startswith("/api/v3/coins/") and path.endswith("/market_chart"):
            coin = path.removeprefix("/api/v3/coins/").removesuffix("/market_chart")
            if coin not in self.coingecko and coin not in self.coingecko_history:
                return _json(404, {"error": "coin not found"})
            days = int(params.get("days", "1"))
            now = dt.datetime.now(dt.UTC)
            first = now.date() - dt.timedelta(days=days)
            points = []
            for offset in range(days + 1):
                day = first + dt.timedelta(days=offset)
                moment = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
                points.append(f"[{int(moment.timestamp() * 1000)},{history_price(coin, day)}]")
            current = self.coingecko.get(coin, history_price(coin, now.date()))
            points.append(f"[{int(now.timestamp() * 1000)},{current}]")
            body = '{"prices":[' + ",".join(points) + '],"market_caps":[],"total_volumes":[]}'
            return 200, "application/json", body.encode(), {}
        return _json(404, {"error": "Not found"})

    def _nbk(self, path, params):
        if path != "/rss/get_rates.cfm":
            return 404, "text/html", b"<html><body>Not found</body></html>", {}
        try:
            day = dt.datetime.strptime(params.get("fdate", ""), "%d.%m.%Y").date()
        except ValueError:
            day = dt.date.today()
        rates = self.nbk.get(day)
        if rates is None and day not in self.nbk_closed:
            rates = self.nbk_default
        items = "".join(
            f"<item><fullname>{code}</fullname><title>{code}</title>"
            f"<description>{description}</description><quant>{quant}</quant>"
            f"<index>UP</index><change>0.00</change></item>"
            for code, (description, quant) in (rates or {}).items()
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><rates><generator>ASP.NET</generator>'
            "<title>Official exchange rates of National Bank of Republic Kazakhstan</title>"
            "<link>https://nationalbank.kz</link>"
            "<description>Official exchange rates of National Bank of Republic Kazakhstan"
            f"</description><copyright>TOO NATIONALBANK</copyright><date>{day:%d.%m.%Y}</date>"
            f"{items}</rates>"
        )
        return 200, "text/xml; charset=utf-8", body.encode(), {}

    def failure_answer(self, provider: str, failure: Failure, path, params):
        headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
        if failure.mode == "429":
            if provider == "binance":
                body = {
                    "code": -1003,
                    "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests "
                    "per minute. Please use WebSocket Streams for live updates to avoid polling "
                    "the API.",
                }
            else:
                body = {
                    "status": {
                        "error_code": 429,
                        "error_message": "You've exceeded the Rate Limit. Please visit "
                        "https://www.coingecko.com/en/api/pricing to subscribe to our API plans "
                        "for higher rate limits.",
                    }
                }
            return (*_json(429, body)[:3], headers)
        if failure.mode == "418":
            body = {
                "code": -1003,
                "msg": "Way too many requests; IP(127.0.0.1) banned until 1893456000000. Please "
                "use WebSocket Streams for live updates to avoid bans.",
            }
            return (*_json(418, body)[:3], headers)
        if failure.mode == "500":
            return 500, "text/plain", b"Internal Server Error", headers
        if failure.mode == "503":
            page = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
            return 503, "text/html", page, headers
        if failure.mode == "html":
            return 200, "text/html", HTML_PAGE, headers
        status, content_type, body, extra = self.answer(provider, path, params)
        if failure.mode == "truncated":
            return status, content_type, body[: max(1, len(body) // 2)], extra
        # "timeout": answer correctly, too late for the client.
        time.sleep(self.timeout_sleep)
        return status, content_type, body, extra


def _json(status: int, data) -> tuple[int, str, bytes, dict]:
    return status, "application/json", json.dumps(data).encode(), {}


def _binance_error(code: int, msg: str, *, status: int = 400):
    return _json(status, {"code": code, "msg": msg})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms) on every kept-alive request.
    disable_nagle_algorithm = True
    market: FakeMarket

    def do_GET(self):
        parts = urlsplit(self.path)
        provider, _, rest = parts.path.lstrip("/").partition("/")
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if provider not in PROVIDERS:
            self._send(404, "text/plain", b"unknown provider", {})
            return
        path = "/" + rest
        self.market._record(Request(provider, path, params))
        failure = self.market._next_failure(provider)
        if failure is not None:
            answer = self.market.failure_answer(provider, failure, path, params)
        else:
            answer = self.market.answer(provider, path, params)
        self._send(*answer)

    def _send(self, status, content_type, body, headers):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a timeout test); nothing to answer to.
            self.close_connection = True

    def log_message(self, format, *args):
        pass


@pytest.fixture
def market(settings):
    """A running fake market with Alem's settings pointed at it: no backoff waits and 429s that
    never wait in tests.

    The client's timeout stays generous (5 s) so that a loaded CI machine never turns a slow
    answer into a retry; a test of the "timeout" mode lowers it with ``short_timeout``."""
    with FakeMarket(timeout_sleep=0.5) as fake:
        for name, value in fake.urls.items():
            setattr(settings, name, value)
        settings.ALEM_PRICE_TIMEOUT_SECONDS = 5
        settings.ALEM_PRICE_HTTP_ATTEMPTS = 3
        settings.ALEM_PRICE_BACKOFF_SECONDS = 0
        settings.ALEM_PRICE_RETRY_AFTER_MAX_WAIT_SECONDS = 0
        settings.ALEM_PRICE_DEFAULT_PAUSE_SECONDS = 300
        yield fake


def short_timeout(settings) -> None:
    """Give the client 0.2 s, well under the 0.5 s the "timeout" mode sleeps."""
    settings.ALEM_PRICE_TIMEOUT_SECONDS = 0.2


if __name__ == "__main__":
    # A manual run: python -m tests.portfolio.fake_market, then point the env vars at it.
    with FakeMarket() as market:
        market.binance.update({"BNBUSDT": "612.34000000", "BTCUSDT": "97000.01000000"})
        market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010"})
        market.nbk_default = {"USD": ("500.00", "1")}
        for name, value in market.urls.items():
            print(f"export {name}={value}")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
