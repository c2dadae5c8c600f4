"""Fetch services against the fake market: what is stored, what is recorded as failed, and
that nothing unparseable ever becomes a price."""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from portfolio.models import Asset, FetchFailure, FxRate, MarketDataProvider, Price, PriceFetch
from portfolio.prices import services as price_services
from portfolio.prices.clients import (
    CLIENTS,
    BinanceClient,
    FetchError,
    LatestQuotes,
    Observed,
    ProviderClient,
)
from portfolio.prices.exceptions import ManualPriceInvalid
from tests.factories import AssetFactory, UserFactory
from tests.portfolio import fake_market
from tests.portfolio.fake_market import history_price

market = fake_market.market  # the fake market fixture

pytestmark = pytest.mark.django_db

D = Decimal
Outcome = PriceFetch.Outcome
Reason = FetchFailure.Reason


@pytest.fixture
def assets():
    """BNB and BTC on both market providers, SOL on CoinGecko only, KZTE pegged to the tenge."""
    return {
        "BNB": AssetFactory(symbol="BNB", binance_symbol="BNBUSDT", coingecko_id="binancecoin"),
        "BTC": AssetFactory(symbol="BTC", binance_symbol="BTCUSDT", coingecko_id="bitcoin"),
        "SOL": AssetFactory(symbol="SOL", binance_symbol="", coingecko_id="solana"),
        "KZTE": AssetFactory(symbol="KZTE", binance_symbol="", coingecko_id="", peg_currency="KZT"),
    }


def stored(source: str) -> list[tuple[str, Decimal, str]]:
    return sorted(
        (p.asset.symbol, p.price, p.quote_currency) for p in Price.objects.filter(source=source)
    )


def test_binance_prices_are_stored_exactly_in_one_request(market, assets):
    market.binance.update({"BNBUSDT": "612.34000000", "BTCUSDT": "97000.01000000"})

    report = price_services.prices_fetch_latest(provider="binance")

    assert report.outcome == Outcome.OK
    assert report.stored == 2
    assert stored("binance") == [
        ("BNB", Decimal("612.3400000000"), "USDT"),
        ("BTC", Decimal("97000.0100000000"), "USDT"),
    ]
    fetch = PriceFetch.objects.get()
    assert (fetch.provider, fetch.outcome, fetch.stored, fetch.attempts) == ("binance", "ok", 2, 1)
    assert fetch.requested == ["BNBUSDT", "BTCUSDT"]
    assert fetch.finished_at is not None
    assert FetchFailure.objects.count() == 0
    (request,) = market.requests_to("binance")
    assert request.params == {"symbols": '["BNBUSDT","BTCUSDT"]'}


def test_an_asset_is_only_asked_of_the_providers_that_list_it(market, assets):
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010", "solana": "150.25"})

    price_services.prices_fetch_latest(provider="binance")
    price_services.prices_fetch_latest(provider="coingecko")

    assert market.requests_to("binance")[0].params["symbols"] == '["BNBUSDT","BTCUSDT"]'
    assert market.requests_to("coingecko")[0].params["ids"] == "binancecoin,bitcoin,solana"
    assert stored("coingecko") == [
        ("BNB", Decimal("612.1000000000"), "USD"),
        ("BTC", Decimal("97010.0000000000"), "USD"),
        ("SOL", Decimal("150.2500000000"), "USD"),
    ]


def test_coingecko_exponent_form_is_stored_exactly_at_coingeckos_update_time(market):
    shib = AssetFactory(symbol="SHIB", binance_symbol="", coingecko_id="shiba-inu")
    market.coingecko["shiba-inu"] = "6.1234e-05"
    market.coingecko_updated_at = 1_718_000_000

    price_services.prices_fetch_latest(provider="coingecko")

    price = Price.objects.get(asset=shib)
    assert price.price == Decimal("0.0000612340")
    assert price.observed_at == dt.datetime(2024, 6, 10, 6, 13, 20, tzinfo=dt.UTC)


def test_the_same_coingecko_observation_is_stored_once(market, assets):
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010", "solana": "150.25"})
    market.coingecko_updated_at = 1_718_000_000

    first = price_services.prices_fetch_latest(provider="coingecko")
    second = price_services.prices_fetch_latest(provider="coingecko")

    assert (first.stored, second.stored) == (3, 0)
    assert second.outcome == Outcome.OK
    assert Price.objects.filter(source="coingecko").count() == 3


def test_an_unknown_symbol_is_recorded_and_the_other_assets_are_stored(market, assets):
    market.binance["BNBUSDT"] = "612.34"

    report = price_services.prices_fetch_latest(provider="binance")

    assert report.outcome == Outcome.PARTIAL
    assert stored("binance") == [("BNB", Decimal("612.3400000000"), "USDT")]
    failure = FetchFailure.objects.get()
    assert (failure.provider, failure.reason, failure.asset) == (
        "binance",
        Reason.UNKNOWN_SYMBOL,
        assets["BTC"],
    )
    assert failure.detail == "BTCUSDT: Binance error -1121: Invalid symbol."
    assert failure.fetch.outcome == Outcome.PARTIAL


@pytest.mark.parametrize(
    ("mode", "reason", "attempts", "detail_start"),
    [
        ("html", Reason.MALFORMED, 1, "not JSON"),
        ("truncated", Reason.MALFORMED, 1, "not JSON"),
        ("500", Reason.SERVER_ERROR, 3, "HTTP 500: Internal Server Error"),
        ("503", Reason.SERVER_ERROR, 3, "HTTP 503: <html><body><h1>503 Service"),
        ("timeout", Reason.TIMEOUT, 3, "no answer within 0.2 s"),
    ],
)
def test_a_failed_fetch_stores_no_price_and_records_why(
    market, settings, assets, mode, reason, attempts, detail_start
):
    fake_market.short_timeout(settings)
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    market.fail("binance", mode, times=3)

    report = price_services.prices_fetch_latest(provider="binance")

    assert report.outcome == Outcome.FAILED
    assert Price.objects.count() == 0
    failure = FetchFailure.objects.get()
    assert (failure.reason, failure.asset, failure.paused_until) == (reason, None, None)
    assert failure.detail.startswith(detail_start)
    fetch = PriceFetch.objects.get()
    assert (fetch.outcome, fetch.stored, fetch.attempts) == (Outcome.FAILED, 0, attempts)


def test_a_server_error_that_clears_on_retry_stores_the_prices(market, assets):
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    market.fail("binance", "503", times=2)

    report = price_services.prices_fetch_latest(provider="binance")

    assert report.outcome == Outcome.OK
    assert report.requests == 3
    assert Price.objects.filter(source="binance").count() == 2
    assert FetchFailure.objects.count() == 0


def test_a_ban_pauses_the_provider_until_retry_after_has_passed(market, assets):
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    market.fail("binance", "418", retry_after=7200)
    before = timezone.now()

    banned = price_services.prices_fetch_latest(provider="binance")

    failure = FetchFailure.objects.get()
    assert failure.reason == Reason.BANNED
    assert failure.http_status == 418
    assert before + dt.timedelta(seconds=7200) <= failure.paused_until
    assert failure.paused_until <= timezone.now() + dt.timedelta(seconds=7200)
    assert banned.paused_until == failure.paused_until

    # While banned: a skipped fetch is recorded and Binance is not asked.
    skipped = price_services.prices_fetch_latest(provider="binance")

    assert skipped.outcome == Outcome.SKIPPED
    assert skipped.paused_until == failure.paused_until
    assert len(market.requests_to("binance")) == 1
    assert Price.objects.count() == 0
    assert FetchFailure.objects.count() == 1

    # Once Retry-After has passed, Binance is asked again.
    FetchFailure.objects.update(paused_until=timezone.now() - dt.timedelta(seconds=1))
    resumed = price_services.prices_fetch_latest(provider="binance")

    assert resumed.outcome == Outcome.OK
    assert len(market.requests_to("binance")) == 2
    assert list(PriceFetch.objects.order_by("id").values_list("outcome", flat=True)) == [
        Outcome.FAILED,
        Outcome.SKIPPED,
        Outcome.OK,
    ]


def test_a_long_rate_limit_pauses_only_that_provider(market, assets):
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010", "solana": "150.25"})
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    market.fail("coingecko", "429", retry_after=600)

    price_services.prices_fetch_latest(provider="coingecko")
    paused = price_services.prices_fetch_latest(provider="coingecko")
    other = price_services.prices_fetch_latest(provider="binance")

    assert FetchFailure.objects.get().reason == Reason.RATE_LIMITED
    assert paused.outcome == Outcome.SKIPPED
    assert len(market.requests_to("coingecko")) == 1
    assert other.outcome == Outcome.OK


def test_a_failing_provider_never_stops_the_others(market, assets):
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010", "solana": "150.25"})
    market.nbk_default = {"USD": ("500.00", "1")}
    market.fail("binance", "503", times=3)

    reports = price_services.prices_fetch_all()

    assert [(r.provider, r.outcome) for r in reports] == [
        ("binance", Outcome.FAILED),
        ("coingecko", Outcome.OK),
        ("nbk", Outcome.OK),
    ]
    assert Price.objects.filter(source="binance").count() == 0
    assert Price.objects.filter(source="coingecko").count() == 3


def test_a_fault_in_one_provider_is_recorded_and_the_others_still_run(market, assets, monkeypatch):
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010", "solana": "150.25"})
    market.nbk_default = {"USD": ("500.00", "1")}

    def broken(self, symbols):
        raise RuntimeError("a bug")

    monkeypatch.setattr(BinanceClient, "latest", broken)

    reports = price_services.prices_fetch_all()

    assert [(r.provider, r.outcome) for r in reports] == [
        ("binance", Outcome.FAILED),
        ("coingecko", Outcome.OK),
        ("nbk", Outcome.OK),
    ]
    failure = FetchFailure.objects.get()
    assert (failure.reason, failure.detail) == (Reason.INTERNAL_ERROR, "RuntimeError: a bug")
    assert PriceFetch.objects.filter(outcome=Outcome.RUNNING).count() == 0


def test_the_official_rate_is_stored_and_values_the_tenge_stablecoin_at_its_peg(market, assets):
    today = timezone.localdate()
    market.nbk[today] = {"USD": ("500.00", "1"), "EUR": ("540.25", "1")}

    report = price_services.prices_fetch_latest(provider="nbk")

    assert report.outcome == Outcome.OK
    assert report.stored == 2
    rate = FxRate.objects.get()
    assert (rate.base_currency, rate.quote_currency, rate.rate, rate.date, rate.source) == (
        "USD",
        "KZT",
        Decimal("500.0000000000"),
        today,
        "nbk",
    )
    kzte = Price.objects.get(asset=assets["KZTE"])
    assert (kzte.source, kzte.quote_currency, kzte.price) == ("nbk", "USD", Decimal("0.002"))
    assert kzte.observed_at == dt.datetime.combine(
        today, dt.time.min, tzinfo=timezone.get_default_timezone()
    )
    (request,) = market.requests_to("nbk")
    assert request.params == {"fdate": f"{today:%d.%m.%Y}"}


def test_a_day_without_official_rates_stores_nothing_and_says_so(market, assets):
    market.nbk_closed.add(timezone.localdate())

    report = price_services.prices_fetch_latest(provider="nbk")

    assert report.outcome == Outcome.FAILED
    assert FxRate.objects.count() == 0
    assert Price.objects.count() == 0
    assert FetchFailure.objects.get().reason == Reason.NO_RATES


def test_an_overlapping_fetch_does_nothing(market, assets):
    market.binance["BNBUSDT"] = "612.34"
    running = PriceFetch.objects.create(
        provider="binance", kind="latest", started_at=timezone.now() - dt.timedelta(seconds=30)
    )

    report = price_services.prices_fetch_latest(provider="binance")

    assert report.outcome == price_services.BUSY
    assert report.fetch_id is None
    assert market.requests_to("binance") == []
    assert list(PriceFetch.objects.all()) == [running]
    assert Price.objects.count() == 0


def test_a_fetch_running_past_its_lease_is_taken_for_dead(market, assets, settings):
    settings.ALEM_PRICE_FETCH_LEASE_SECONDS = 300
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    dead = PriceFetch.objects.create(
        provider="binance", kind="latest", started_at=timezone.now() - dt.timedelta(seconds=301)
    )

    report = price_services.prices_fetch_latest(provider="binance")

    dead.refresh_from_db()
    assert dead.outcome == Outcome.ABANDONED
    assert report.outcome == Outcome.OK
    assert Price.objects.count() == 2


def test_a_fetch_of_another_provider_is_not_blocked_by_a_running_one(market, assets):
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010", "solana": "150.25"})
    PriceFetch.objects.create(provider="binance", kind="latest", started_at=timezone.now())

    assert price_services.prices_fetch_latest(provider="coingecko").outcome == Outcome.OK


def test_an_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="unknown provider 'kraken'"):
        price_services.prices_fetch_latest(provider="kraken")
    assert PriceFetch.objects.count() == 0


# ---------------------------------------------------------------------------------------------
# Backfill
# ---------------------------------------------------------------------------------------------


def test_binance_backfill_stores_finished_daily_closes_and_is_idempotent(market, assets):
    market.binance.update({"BNBUSDT": "612.34", "BTCUSDT": "97000.01"})
    steps = []

    first = price_services.prices_backfill(
        provider="binance", days=30, progress=lambda *step: steps.append(step)
    )
    second = price_services.prices_backfill(provider="binance", days=30)

    assert (first.outcome, first.stored, second.outcome, second.stored) == ("ok", 60, "ok", 0)
    assert steps == [(1, 2, "BNBUSDT", 30), (2, 2, "BTCUSDT", 60)]
    closes = Price.objects.filter(asset=assets["BNB"], source="binance").order_by("observed_at")
    assert closes.count() == 30
    first_day = timezone.now().astimezone(dt.UTC).date() - dt.timedelta(days=30)
    assert closes[0].price == Decimal(history_price("BNBUSDT", first_day))
    assert closes[0].observed_at == dt.datetime.combine(
        first_day, dt.time(23, 59, 59, 999000), tzinfo=dt.UTC
    )
    assert closes.last().observed_at < timezone.now()


def test_coingecko_backfill_records_an_unknown_coin_and_keeps_the_others(market, assets):
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010"})

    report = price_services.prices_backfill(provider="coingecko", days=10)

    assert report.outcome == Outcome.PARTIAL
    assert Price.objects.filter(asset=assets["BNB"], source="coingecko").count() == 12
    assert Price.objects.filter(asset=assets["SOL"]).count() == 0
    failure = FetchFailure.objects.get()
    assert (failure.reason, failure.asset, failure.http_status) == (
        Reason.UNKNOWN_SYMBOL,
        assets["SOL"],
        404,
    )


def test_a_ban_stops_the_backfill_of_that_provider_at_once(market, assets):
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010", "solana": "150.25"})
    market.fail("coingecko", "429", retry_after=3600)

    report = price_services.prices_backfill(provider="coingecko", days=10)

    assert report.outcome == Outcome.FAILED
    assert len(market.requests_to("coingecko")) == 1
    assert Price.objects.count() == 0
    assert FetchFailure.objects.get().reason == Reason.RATE_LIMITED


class HistoryClient(ProviderClient):
    """Daily history from memory, failing as told per key; records what it was asked."""

    provider = MarketDataProvider.COINGECKO
    quote_currency = "USD"

    def __init__(self, failing: dict[str, FetchError]):
        super().__init__()
        self.failing = failing
        self.asked = []

    def history(self, key, *, start, days):
        self.asked.append(key)
        if key in self.failing:
            raise self.failing[key]
        return [Observed(D("100"), start + dt.timedelta(days=n)) for n in range(days)]


def test_a_market_backfill_asks_in_order_goes_on_after_a_failure_and_stops_at_a_pause(assets):
    # Given BTC's history fails for a while and SOL's provider then asks us to stay away
    client = HistoryClient(
        {
            "bitcoin": FetchError(Reason.SERVER_ERROR, "HTTP 503", http_status=503),
            "solana": FetchError(Reason.RATE_LIMITED, "HTTP 429", pause_seconds=600),
        }
    )
    AssetFactory(symbol="ZZZ", binance_symbol="", coingecko_id="zcash")
    steps = []

    report = price_services.prices_backfill(
        provider="coingecko", days=3, client=client, progress=lambda *step: steps.append(step)
    )

    # Then BNB is stored, BTC's failure does not stop the rest, and nothing is asked after SOL
    assert client.asked == ["binancecoin", "bitcoin", "solana"]
    assert steps == [(1, 4, "binancecoin", 3), (2, 4, "bitcoin", 3), (3, 4, "solana", 3)]
    assert (report.outcome, report.stored) == (Outcome.PARTIAL, 3)
    assert set(Price.objects.values_list("asset__symbol", flat=True)) == {"BNB"}
    assert [(f.reason, f.asset.symbol) for f in FetchFailure.objects.order_by("id")] == [
        (Reason.SERVER_ERROR, "BTC"),
        (Reason.RATE_LIMITED, "SOL"),
    ]


def test_official_rate_backfill_asks_only_missing_days_and_sums_up_days_without_rates(
    market, assets
):
    today = timezone.localdate()
    market.nbk_default = {"USD": ("500.00", "1")}
    market.nbk_closed = {today - dt.timedelta(days=2), today - dt.timedelta(days=3)}
    FxRate.objects.create(rate=Decimal("499"), date=today - dt.timedelta(days=1))

    report = price_services.prices_backfill(provider="nbk", days=5)

    assert report.outcome == Outcome.PARTIAL
    assert sorted(FxRate.objects.values_list("date", flat=True)) == [
        today - dt.timedelta(days=offset) for offset in (5, 4, 1, 0)
    ]
    assert Price.objects.filter(asset=assets["KZTE"], source="nbk").count() == 3
    assert len(market.requests_to("nbk")) == 5
    failure = FetchFailure.objects.get()
    assert failure.reason == Reason.NO_RATES
    assert failure.detail == (
        f"no rates published on 2 day(s): {today - dt.timedelta(days=3):%d.%m.%Y}, "
        f"{today - dt.timedelta(days=2):%d.%m.%Y}"
    )


# ---------------------------------------------------------------------------------------------
# Manual prices
# ---------------------------------------------------------------------------------------------


def test_a_manual_price_is_stored_as_manual_and_signed(assets):
    admin = UserFactory(username="admin")
    observed_at = timezone.now() - dt.timedelta(minutes=5)

    price = price_services.price_record_manual(
        asset=assets["BNB"], price=Decimal("611.5"), observed_at=observed_at, entered_by=admin
    )

    price.refresh_from_db()
    assert (price.source, price.quote_currency, price.price, price.entered_by) == (
        "manual",
        "USD",
        Decimal("611.5"),
        admin,
    )
    assert price.observed_at == observed_at


@pytest.mark.parametrize(
    ("price", "minutes_ahead", "message"),
    [
        (Decimal("0"), 0, "positive"),
        (Decimal("-1"), 0, "positive"),
        (Decimal("NaN"), 0, "positive"),
        (Decimal("611.12345678901"), 0, "at most 10 decimal places"),
        (Decimal("1E+18"), 0, "fit 28 digits"),
        (Decimal("611.5"), 5, "future"),
    ],
)
def test_a_manual_price_that_cannot_be_a_price_is_refused(assets, price, minutes_ahead, message):
    admin = UserFactory(username="admin")

    with pytest.raises(ManualPriceInvalid, match=message):
        price_services.price_record_manual(
            asset=assets["BNB"],
            price=price,
            observed_at=timezone.now() + dt.timedelta(minutes=minutes_ahead),
            entered_by=admin,
        )

    assert Price.objects.count() == 0


def test_a_second_manual_price_for_the_same_moment_is_refused(assets):
    admin = UserFactory(username="admin")
    moment = timezone.now()
    price_services.price_record_manual(
        asset=assets["BNB"], price=Decimal("611.5"), observed_at=moment, entered_by=admin
    )

    with pytest.raises(ManualPriceInvalid, match="exists"):
        price_services.price_record_manual(
            asset=assets["BNB"], price=Decimal("612"), observed_at=moment, entered_by=admin
        )

    assert list(Price.objects.values_list("price", flat=True)) == [Decimal("611.5")]


# ---------------------------------------------------------------------------------------------
# The one writer of prices, and who asks whom
# ---------------------------------------------------------------------------------------------


def test_prices_store_stores_each_observation_once_and_counts_exactly():
    asset = AssetFactory(symbol="BNB")
    at = timezone.now().replace(microsecond=0)

    def rows():
        observed = [at, at + dt.timedelta(minutes=1), at]  # the first twice in one batch
        return [
            Price(
                asset=asset, source="binance", quote_currency="USDT", price=D("600"), observed_at=t
            )
            for t in observed
        ]

    assert price_services.prices_store(rows()) == 2
    assert price_services.prices_store(rows()) == 0
    assert Price.objects.count() == 2


def test_each_client_names_assets_its_own_way_and_says_what_it_serves():
    asset = Asset(symbol="BNB", binance_symbol=" bnbusdt ", coingecko_id=" binancecoin ")

    assert set(CLIENTS) == set(MarketDataProvider.values)
    assert CLIENTS[MarketDataProvider.BINANCE].asset_key(asset) == "BNBUSDT"
    assert CLIENTS[MarketDataProvider.COINGECKO].asset_key(asset) == "binancecoin"
    assert CLIENTS[MarketDataProvider.NBK].asset_key(asset) == ""
    assert [p for p, client in CLIENTS.items() if client.official_rates] == ["nbk"]


def test_the_fetch_asks_whichever_client_is_registered_for_the_provider(monkeypatch, assets):
    class CannedClient(ProviderClient):
        """Answers from memory: the fetch code must not care which client it holds."""

        provider = MarketDataProvider.BINANCE
        quote_currency = "USDT"

        @classmethod
        def asset_key(cls, asset) -> str:
            return f"canned-{asset.symbol}" if asset.symbol in {"BNB", "SOL"} else ""

        def latest(self, keys: list[str]) -> LatestQuotes:
            self.asked = keys
            at = timezone.now()
            return LatestQuotes(
                quote_currency=self.quote_currency,
                prices={"canned-BNB": Observed(D("601.25"), at)},
                unknown={"canned-SOL": "not in the can"},
            )

    monkeypatch.setitem(CLIENTS, MarketDataProvider.BINANCE, CannedClient)

    report = price_services.prices_fetch_latest(provider=MarketDataProvider.BINANCE)

    assert report.outcome == Outcome.PARTIAL
    assert report.stored == 1
    assert stored("binance") == [("BNB", D("601.25"), "USDT")]
    assert list(PriceFetch.objects.values_list("requested", flat=True)) == [
        ["canned-BNB", "canned-SOL"]
    ]
    assert [(f.reason, f.asset.symbol) for f in FetchFailure.objects.all()] == [
        (Reason.UNKNOWN_SYMBOL, "SOL")
    ]


def test_every_writer_of_prices_stores_through_prices_store(monkeypatch, market, assets):
    calls = []
    real_store = price_services.prices_store

    def spy(rows):
        calls.append(sorted({row.source for row in rows}))
        return real_store(rows)

    monkeypatch.setattr(price_services, "prices_store", spy)
    market.coingecko.update({"binancecoin": "612.1", "bitcoin": "97010", "solana": "150.25"})
    at = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=5)

    price_services.prices_fetch_latest(provider=MarketDataProvider.COINGECKO)
    price_services.price_history_import(
        asset=assets["BNB"], closes=[price_services.DailyClose(dt.date(2024, 1, 2), D("310.5"))]
    )
    price_services.price_record_manual(
        asset=assets["BNB"], price=D("612"), entered_by=UserFactory(), observed_at=at
    )

    assert calls == [["coingecko"], ["yahoo"], ["manual"]]
    assert Price.objects.filter(source="coingecko").count() == 3
    assert Price.objects.filter(source__in=["yahoo", "manual"]).count() == 2
