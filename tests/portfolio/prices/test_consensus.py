"""The consensus price: exact median, flags and their boundaries; then ``consensus_for`` on
stored prices."""

import datetime as dt
from decimal import Decimal

import pytest

from portfolio.models import Price
from portfolio.prices.consensus import (
    DIVERGENT,
    MISSING,
    SINGLE_SOURCE,
    STALE,
    Quote,
    consensus_of,
    median,
)
from portfolio.prices.selectors import consensus_for
from tests.factories import AssetFactory, PriceFactory

AT = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
FIFTEEN_MINUTES = dt.timedelta(minutes=15)
TWO_PERCENT = Decimal("0.02")


def quote(source: str, price: str, minutes_ago: float = 1) -> Quote:
    return Quote(source, Decimal(price), AT - dt.timedelta(minutes=minutes_ago))


def judge(*quotes: Quote, pegged: bool = False, stale_after=FIFTEEN_MINUTES):
    return consensus_of(
        "BNB",
        list(quotes),
        at=AT,
        stale_after=stale_after,
        max_divergence=TWO_PERCENT,
        pegged=pegged,
    )


def test_median_of_an_odd_count_is_the_middle_value():
    assert median([Decimal("3"), Decimal("1"), Decimal("2")]) == Decimal("2")


def test_median_of_an_even_count_is_the_exact_mean_of_the_middle_two():
    assert median([Decimal("612.34"), Decimal("612.35")]) == Decimal("612.345")
    assert median([Decimal("1.0000000001"), Decimal("1.0000000002")]) == Decimal("1.00000000015")


def test_median_of_nothing_is_refused():
    with pytest.raises(ValueError):
        median([])


def test_two_close_fresh_sources_give_a_usable_median():
    consensus = judge(quote("binance", "612.34"), quote("coingecko", "612.10", minutes_ago=3))

    assert consensus.price == Decimal("612.22")
    assert consensus.flags == ()
    assert consensus.usable
    assert consensus.sources == ("binance", "coingecko")
    assert consensus.age == dt.timedelta(minutes=1)
    assert consensus.spread.quantize(Decimal("1E-12")) == Decimal("0.000392015942")


def test_sources_further_apart_than_the_limit_are_divergent():
    consensus = judge(quote("binance", "600"), quote("coingecko", "613"))

    assert consensus.price == Decimal("606.5")
    assert consensus.flags == (DIVERGENT,)
    assert not consensus.usable


def test_a_spread_exactly_at_the_limit_is_not_divergent():
    consensus = judge(quote("binance", "99"), quote("coingecko", "101"))

    assert consensus.spread == Decimal("0.02")
    assert consensus.flags == ()
    assert consensus.usable


def test_one_outlier_among_three_sources_does_not_move_the_median_but_is_flagged():
    consensus = judge(quote("binance", "600"), quote("coingecko", "601"), quote("manual", "700"))

    assert consensus.price == Decimal("601")
    assert consensus.flags == (DIVERGENT,)


def test_a_price_whose_freshest_quote_is_too_old_is_stale_and_shown_for_information():
    consensus = judge(
        quote("binance", "612.34", minutes_ago=16), quote("coingecko", "612.10", minutes_ago=20)
    )

    assert consensus.price == Decimal("612.34")
    assert consensus.flags == (STALE,)
    assert consensus.age == dt.timedelta(minutes=16)
    assert not consensus.usable


def test_a_quote_exactly_at_the_staleness_limit_is_still_fresh():
    consensus = judge(quote("binance", "612.34", minutes_ago=15), quote("coingecko", "612.34"))

    assert [q.fresh for q in consensus.quotes] == [True, True]
    assert consensus.usable


def test_one_fresh_source_alone_is_single_source_and_stale_ones_do_not_count():
    consensus = judge(quote("binance", "612.34"), quote("coingecko", "500", minutes_ago=60))

    assert consensus.price == Decimal("612.34")
    assert consensus.flags == (SINGLE_SOURCE,)
    assert consensus.sources == ("binance",)
    assert [(q.source, q.fresh) for q in consensus.quotes] == [
        ("binance", True),
        ("coingecko", False),
    ]


def test_a_pegged_asset_needs_only_its_official_rate():
    consensus = judge(
        quote("nbk", "0.0020000000", minutes_ago=600), pegged=True, stale_after=dt.timedelta(days=4)
    )

    assert consensus.flags == ()
    assert consensus.price == Decimal("0.0020000000")


def test_an_asset_never_priced_has_no_price_and_is_missing():
    consensus = judge()

    assert consensus.price is None
    assert consensus.flags == (MISSING,)
    assert consensus.age is None
    assert not consensus.usable


def test_only_the_latest_quote_of_each_source_known_at_the_time_counts():
    consensus = judge(
        quote("binance", "500", minutes_ago=10),
        quote("binance", "612.34", minutes_ago=2),
        quote("binance", "999", minutes_ago=-5),  # observed after AT: not known then
        quote("coingecko", "612.30"),
    )

    assert consensus.price == Decimal("612.32")
    assert [(q.source, q.price) for q in consensus.quotes] == [
        ("coingecko", Decimal("612.30")),
        ("binance", Decimal("612.34")),
    ]


def test_consensus_as_json_keeps_decimals_as_strings():
    consensus = judge(quote("binance", "612.34"), quote("coingecko", "612.10", minutes_ago=3))

    data = consensus.as_json()

    assert data["price_usd"] == "612.22"
    assert data["usable"] is True
    assert data["flags"] == []
    assert data["age_seconds"] == 60
    assert data["max_divergence"] == "0.02"
    assert data["quotes"][0] == {
        "source": "binance",
        "price": "612.34",
        "quote_currency": "USD",
        "observed_at": "2026-03-02T11:59:00+00:00",
        "age_seconds": 60,
        "fresh": True,
    }


# ---------------------------------------------------------------------------------------------
# consensus_for: the same rules over stored prices
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_consensus_for_takes_the_latest_stored_quote_per_source_usdt_included():
    bnb = AssetFactory(symbol="BNB")
    PriceFactory(
        asset=bnb,
        source=Price.Source.BINANCE,
        price=Decimal("500"),
        observed_at=AT - FIFTEEN_MINUTES * 2,
    )
    PriceFactory(
        asset=bnb,
        source=Price.Source.BINANCE,
        quote_currency="USDT",
        price=Decimal("612.34"),
        observed_at=AT - dt.timedelta(minutes=1),
    )
    PriceFactory(
        asset=bnb,
        source=Price.Source.COINGECKO,
        price=Decimal("612.10"),
        observed_at=AT - dt.timedelta(minutes=2),
    )
    PriceFactory(
        asset=bnb,
        source=Price.Source.YAHOO,
        price=Decimal("580"),
        observed_at=AT - dt.timedelta(days=1),
    )
    PriceFactory(
        asset=bnb,
        source=Price.Source.COINGECKO,
        quote_currency="EUR",
        price=Decimal("560"),
        observed_at=AT,
    )

    consensus = consensus_for(bnb, at=AT)

    assert consensus.price == Decimal("612.22")
    assert consensus.flags == ()
    assert [(q.source, q.price, q.quote_currency, q.fresh) for q in consensus.quotes] == [
        ("binance", Decimal("612.34"), "USDT", True),
        ("coingecko", Decimal("612.10"), "USD", True),
        ("yahoo", Decimal("580"), "USD", False),
    ]


@pytest.mark.django_db
def test_consensus_for_a_tenge_pegged_asset_follows_the_peg_staleness_limit(settings):
    settings.ALEM_PRICE_PEG_STALE_AFTER_SECONDS = 4 * 24 * 3600
    kzte = AssetFactory(symbol="KZTE", binance_symbol="", coingecko_id="", peg_currency="KZT")
    PriceFactory(
        asset=kzte,
        source=Price.Source.NBK,
        price=Decimal("0.0020000000"),
        observed_at=AT - dt.timedelta(days=3),
    )

    assert consensus_for(kzte, at=AT).usable
    assert consensus_for(kzte, at=AT + dt.timedelta(days=1, seconds=1)).flags == (STALE,)


@pytest.mark.django_db
def test_market_quotes_of_a_pegged_asset_keep_the_market_staleness_limit(settings):
    kzte = AssetFactory(symbol="KZTE", binance_symbol="", coingecko_id="kzte", peg_currency="KZT")
    PriceFactory(
        asset=kzte, source="nbk", price=Decimal("0.002"), observed_at=AT - dt.timedelta(days=1)
    )
    PriceFactory(
        asset=kzte,
        source="coingecko",
        price=Decimal("0.0021"),
        observed_at=AT - dt.timedelta(hours=1),
    )

    consensus = consensus_for(kzte, at=AT)

    assert consensus.price == Decimal("0.002")
    assert [(q.source, q.fresh) for q in consensus.quotes] == [("coingecko", False), ("nbk", True)]
    assert consensus.flags == ()


@pytest.mark.django_db
def test_consensus_for_uses_the_limits_from_settings(settings):
    settings.ALEM_PRICE_MAX_DIVERGENCE = "0.05"
    settings.ALEM_PRICE_STALE_AFTER_SECONDS = 60
    bnb = AssetFactory(symbol="BNB")
    PriceFactory(asset=bnb, source="binance", price=Decimal("600"), observed_at=AT)
    PriceFactory(
        asset=bnb,
        source="coingecko",
        price=Decimal("620"),
        observed_at=AT - dt.timedelta(seconds=61),
    )

    consensus = consensus_for(bnb, at=AT)

    assert consensus.flags == (SINGLE_SOURCE,)
    assert consensus.max_divergence == Decimal("0.05")
    assert consensus.stale_after == dt.timedelta(seconds=60)
