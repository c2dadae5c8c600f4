"""Provider clients and parsers: exact decimals, one batched request, every failure mode.

Parsers are tested on bodies; clients against the fake market on 127.0.0.1.
"""

import datetime as dt
from decimal import Decimal

import pytest

from portfolio.models import FetchFailure
from portfolio.prices import parsing
from portfolio.prices.clients import BinanceClient, CoinGeckoClient, FetchError, NbkClient
from portfolio.prices.parsing import MalformedBody
from tests.portfolio import fake_market
from tests.portfolio.fake_market import FakeMarket, history_price

market = fake_market.market  # the fake market fixture

Reason = FetchFailure.Reason


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------


def test_binance_prices_are_read_exactly_from_their_strings():
    body = b'[{"symbol":"BNBUSDT","price":"612.34000000"},{"symbol":"BTCUSDT","price":"0.1"}]'

    prices = parsing.parse_binance_ticker(body)

    assert prices == {"BNBUSDT": Decimal("612.34000000"), "BTCUSDT": Decimal("0.1")}
    assert str(prices["BTCUSDT"]) == "0.1"


def test_coingecko_numbers_in_exponent_form_are_read_exactly():
    body = b'{"shiba":{"usd":6.1234e-05,"last_updated_at":1718000000},"bitcoin":{"usd":97000.1}}'

    prices = parsing.parse_coingecko_simple_price(body)

    assert prices["shiba"].price == Decimal("0.000061234")
    assert prices["shiba"].last_updated_at == dt.datetime(2024, 6, 10, 6, 13, 20, tzinfo=dt.UTC)
    assert prices["bitcoin"].price == Decimal("97000.1")
    assert prices["bitcoin"].last_updated_at is None


def test_coingecko_numbers_keep_digits_a_float_would_lose():
    body = b'{"bitcoin":{"usd":97000.123456789012345678}}'

    price = parsing.parse_coingecko_simple_price(body)["bitcoin"].price

    assert price == Decimal("97000.123456789012345678")
    assert Decimal(float(price)) != price


def test_nbk_rate_is_the_description_divided_by_the_quant():
    body = (
        b'<?xml version="1.0" encoding="utf-8"?><rates><title>Official exchange rates</title>'
        b"<description>Official exchange rates</description><date>05.07.2024</date>"
        b"<item><title>USD</title><description>475.81</description><quant>1</quant></item>"
        b"<item><title>RUB</title><description>52.3</description><quant>10</quant></item>"
        b"<item><title>AMD</title><description>12.21</description><quant>100</quant></item>"
        b"</rates>"
    )

    rates = parsing.parse_nbk_rates(body)

    assert rates.date == dt.date(2024, 7, 5)
    assert rates.rates == {
        "USD": Decimal("475.81"),
        "RUB": Decimal("5.23"),
        "AMD": Decimal("0.1221"),
    }


def test_nbk_day_without_rates_parses_to_no_rates():
    body = "<rates><date>06.07.2024</date><info>на выбранную дату информации нет.</info></rates>"

    rates = parsing.parse_nbk_rates(body.encode())

    assert rates.date == dt.date(2024, 7, 6)
    assert rates.rates == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<!DOCTYPE html><html><body>Just a moment...</body></html>", "not JSON"),
        (b'[{"symbol":"BNBUSDT","price":"612.3', "not JSON"),
        (b'[{"symbol":"BNBUSDT","price":NaN}]', "non-finite"),
        (b'[{"symbol":"BNBUSDT","price":"-1"}]', "not a positive price"),
        (b'[{"symbol":"BNBUSDT","price":"0.00000000"}]', "not a positive price"),
        (b'[{"symbol":"BNBUSDT","price":"abc"}]', "not a decimal"),
        (b'[{"symbol":"BNBUSDT"}]', "expected a decimal"),
        (b'{"code":-1121,"msg":"Invalid symbol."}', "ticker without a symbol"),
    ],
)
def test_unreadable_binance_bodies_are_refused(body, message):
    with pytest.raises(MalformedBody, match=message):
        parsing.parse_binance_ticker(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"binancecoin":{"usd":61',
        b'{"status":{"error_code":429,"error_message":"You\'ve exceeded the Rate Limit."}}',
        b'{"binancecoin":{"eur":600}}',
        b'{"binancecoin":{"usd":"612"}}',
        b"<html><body>502 Bad Gateway</body></html>",
    ],
)
def test_unreadable_coingecko_bodies_are_refused(body):
    with pytest.raises(MalformedBody):
        parsing.parse_coingecko_simple_price(body)


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Service unavailable</body></html>",
        b"<rates><item><title>USD</title><description>475,81</description>",
        b"<rates><item><title>USD</title><description>475,81</description>"
        b"<quant>1</quant></item></rates>",
        b'<!DOCTYPE rates [<!ENTITY a "aaaa">]><rates>&a;</rates>',
    ],
)
def test_unreadable_nbk_bodies_are_refused(body):
    with pytest.raises(MalformedBody):
        parsing.parse_nbk_rates(body)


def test_binance_klines_are_read_to_close_price_and_close_time():
    body = (
        b'[[1718064000000,"600.1","615.0","598.2","612.34000000","1000.0",1718150399999,'
        b'"612340.0",100,"500.0","306170.0","0"]]'
    )

    (kline,) = parsing.parse_binance_klines(body)

    assert kline.close == Decimal("612.34000000")
    assert kline.open_time == dt.datetime(2024, 6, 11, tzinfo=dt.UTC)
    assert kline.close_time == dt.datetime(2024, 6, 11, 23, 59, 59, 999000, tzinfo=dt.UTC)


def test_binance_error_body_names_unknown_symbols():
    error = parsing.parse_binance_error(b'{"code":-1121,"msg":"Invalid symbol."}')

    assert error == parsing.BinanceError(-1121, "Invalid symbol.")
    assert error.unknown_symbol
    assert parsing.parse_binance_error(b"<html></html>") is None


def test_retry_after_reads_seconds_and_http_dates():
    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)

    assert parsing.parse_retry_after("120", now=now) == 120.0
    assert parsing.parse_retry_after("Thu, 01 Jan 2026 12:05:00 GMT", now=now) == 300.0
    assert parsing.parse_retry_after("soon", now=now) is None
    assert parsing.parse_retry_after(None, now=now) is None


# ---------------------------------------------------------------------------------------------
# Clients against the fake market
# ---------------------------------------------------------------------------------------------


class Sleeps(list):
    """Records the waits a client asked for instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def test_binance_asks_for_every_symbol_in_one_request(market):
    market.binance.update({"BNBUSDT": "612.34000000", "BTCUSDT": "97000.01000000"})

    with BinanceClient() as client:
        answer = client.latest(["BNBUSDT", "BTCUSDT"])

    assert {key: q.price for key, q in answer.prices.items()} == {
        "BNBUSDT": Decimal("612.34"),
        "BTCUSDT": Decimal("97000.01"),
    }
    assert answer.quote_currency == "USDT"
    assert answer.unknown == {}
    (request,) = market.requests_to("binance")
    assert request.path == "/api/v3/ticker/price"
    assert request.params == {"symbols": '["BNBUSDT","BTCUSDT"]'}


def test_binance_unknown_symbol_is_isolated_so_the_others_are_priced(market):
    market.binance["BNBUSDT"] = "612.34000000"

    with BinanceClient() as client:
        answer = client.latest(["BNBUSDT", "NOPEUSDT"])

    assert {key: q.price for key, q in answer.prices.items()} == {"BNBUSDT": Decimal("612.34")}
    assert answer.unknown == {"NOPEUSDT": "Binance error -1121: Invalid symbol."}
    assert [r.params for r in market.requests_to("binance")] == [
        {"symbols": '["BNBUSDT","NOPEUSDT"]'},
        {"symbol": "BNBUSDT"},
        {"symbol": "NOPEUSDT"},
    ]


def test_coingecko_asks_once_reads_exponent_form_and_names_unknown_ids(market):
    market.coingecko.update({"binancecoin": "612.1", "shiba-inu": "6.1234e-05"})
    market.coingecko_updated_at = 1_718_000_000

    with CoinGeckoClient() as client:
        answer = client.latest(["binancecoin", "shiba-inu", "no-such-coin"])

    assert {key: q.price for key, q in answer.prices.items()} == {
        "binancecoin": Decimal("612.1"),
        "shiba-inu": Decimal("0.000061234"),
    }
    assert answer.prices["binancecoin"].observed_at == dt.datetime(
        2024, 6, 10, 6, 13, 20, tzinfo=dt.UTC
    )
    assert answer.unknown == {"no-such-coin": "absent from CoinGecko's answer"}
    (request,) = market.requests_to("coingecko")
    assert request.params == {
        "ids": "binancecoin,shiba-inu,no-such-coin",
        "vs_currencies": "usd",
        "include_last_updated_at": "true",
        "precision": "full",
    }


def test_server_errors_are_retried_with_doubling_backoff(market, settings):
    settings.ALEM_PRICE_BACKOFF_SECONDS = 1.5
    market.binance["BNBUSDT"] = "612.34000000"
    market.fail("binance", "500")
    market.fail("binance", "503")
    sleeps = Sleeps()

    with BinanceClient(sleep=sleeps) as client:
        answer = client.latest(["BNBUSDT"])

    assert answer.prices["BNBUSDT"].price == Decimal("612.34")
    assert sleeps == [1.5, 3.0]
    assert client.requests == 3


def test_timeouts_are_retried_then_reported(market, settings):
    fake_market.short_timeout(settings)
    market.binance["BNBUSDT"] = "612.34000000"
    market.fail("binance", "timeout", times=3)
    sleeps = Sleeps()

    with BinanceClient(sleep=sleeps) as client, pytest.raises(FetchError) as caught:
        client.latest(["BNBUSDT"])

    assert caught.value.reason == Reason.TIMEOUT
    assert caught.value.detail == "no answer within 0.2 s (after 3 attempts)"
    assert caught.value.pause_seconds is None
    assert len(market.requests_to("binance")) == 3
    assert len(sleeps) == 2


def test_rate_limit_with_a_short_retry_after_waits_it_out(market, settings):
    settings.ALEM_PRICE_RETRY_AFTER_MAX_WAIT_SECONDS = 10
    market.coingecko["bitcoin"] = "97000"
    market.fail("coingecko", "429", retry_after=3)
    sleeps = Sleeps()

    with CoinGeckoClient(sleep=sleeps) as client:
        answer = client.latest(["bitcoin"])

    assert answer.prices["bitcoin"].price == Decimal("97000")
    assert sleeps == [3.0]
    assert len(market.requests_to("coingecko")) == 2


def test_rate_limit_with_a_long_retry_after_gives_up_with_a_pause(market, settings):
    settings.ALEM_PRICE_RETRY_AFTER_MAX_WAIT_SECONDS = 10
    market.binance["BNBUSDT"] = "612.34000000"
    market.fail("binance", "429", retry_after=120)
    sleeps = Sleeps()

    with BinanceClient(sleep=sleeps) as client, pytest.raises(FetchError) as caught:
        client.latest(["BNBUSDT"])

    assert caught.value.reason == Reason.RATE_LIMITED
    assert caught.value.http_status == 429
    assert caught.value.pause_seconds == 120.0
    assert sleeps == []
    assert len(market.requests_to("binance")) == 1


def test_ban_gives_up_at_once_with_the_pause_binance_named(market):
    market.binance["BNBUSDT"] = "612.34000000"
    market.fail("binance", "418", retry_after=7200)
    sleeps = Sleeps()

    with BinanceClient(sleep=sleeps) as client, pytest.raises(FetchError) as caught:
        client.latest(["BNBUSDT"])

    assert caught.value.reason == Reason.BANNED
    assert caught.value.pause_seconds == 7200.0
    assert "banned until" in caught.value.detail
    assert sleeps == []
    assert len(market.requests_to("binance")) == 1


def test_ban_without_retry_after_pauses_for_the_default(market, settings):
    settings.ALEM_PRICE_DEFAULT_PAUSE_SECONDS = 900
    market.fail("binance", "418")

    with BinanceClient() as client, pytest.raises(FetchError) as caught:
        client.latest(["BNBUSDT"])

    assert caught.value.pause_seconds == 900


@pytest.mark.parametrize("mode", ["html", "truncated"])
def test_unreadable_answers_are_malformed_and_not_retried(market, mode):
    market.coingecko["bitcoin"] = "97000"
    market.fail("coingecko", mode)

    with CoinGeckoClient() as client, pytest.raises(FetchError) as caught:
        client.latest(["bitcoin"])

    assert caught.value.reason == Reason.MALFORMED
    assert caught.value.detail.startswith("not JSON")
    assert len(market.requests_to("coingecko")) == 1


def test_refused_connection_is_reported_after_the_attempts(settings):
    with FakeMarket() as gone:
        settings.BINANCE_BASE_URL = gone.urls["BINANCE_BASE_URL"]
    settings.ALEM_PRICE_BACKOFF_SECONDS = 0

    with BinanceClient() as client, pytest.raises(FetchError) as caught:
        client.latest(["BNBUSDT"])

    assert caught.value.reason == Reason.CONNECTION
    assert client.requests == 3


def test_nbk_day_without_rates_is_reported_as_no_rates(market):
    market.nbk_closed.add(dt.date(2024, 7, 6))

    with NbkClient() as client, pytest.raises(FetchError) as caught:
        client.rates(dt.date(2024, 7, 6))

    assert caught.value.reason == Reason.NO_RATES
    assert caught.value.detail == "no rates published for 06.07.2024"
    (request,) = market.requests_to("nbk")
    assert request.params == {"fdate": "06.07.2024"}


def test_nbk_rates_of_a_day(market):
    market.nbk[dt.date(2024, 7, 5)] = {"USD": ("475.81", "1"), "RUB": ("52.3", "10")}

    with NbkClient() as client:
        rates = client.rates(dt.date(2024, 7, 5))

    assert rates.date == dt.date(2024, 7, 5)
    assert rates.rates == {"USD": Decimal("475.81"), "RUB": Decimal("5.23")}


def test_klines_are_paged_and_todays_unfinished_candle_is_left_out(market):
    market.binance_history.add("BNBUSDT")
    today = dt.datetime.now(dt.UTC).date()
    start_day = today - dt.timedelta(days=1500)
    start = dt.datetime.combine(start_day, dt.time.min, tzinfo=dt.UTC)

    with BinanceClient() as client:
        closes = client.daily_closes("BNBUSDT", start=start)

    assert len(closes) == 1500
    assert closes[0].price == Decimal(history_price("BNBUSDT", start_day))
    assert closes[0].observed_at == start + dt.timedelta(days=1, milliseconds=-1)
    assert closes[-1].observed_at.date() == today - dt.timedelta(days=1)
    assert [r.params["limit"] for r in market.requests_to("binance")] == ["1000", "1000"]


def test_market_chart_of_an_unknown_coin_is_an_unknown_symbol(market):
    with CoinGeckoClient() as client, pytest.raises(FetchError) as caught:
        client.daily_prices("no-such-coin", days=30)

    assert caught.value.reason == Reason.UNKNOWN_SYMBOL
    assert caught.value.http_status == 404
