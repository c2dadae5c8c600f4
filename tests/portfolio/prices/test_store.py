"""``prices_store``, the one writer of prices: COPY into a staging table and one idempotent
merge. Exact values, each observation once, the constraints of the table, and races."""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from portfolio.models import FxRate, Price
from portfolio.prices import services as price_services
from portfolio.prices.services import PriceRow, prices_store, storable_price
from tests.factories import AssetFactory, UserFactory
from tests.portfolio import fake_market

market = fake_market.market  # the fake market fixture

D = Decimal
AT = dt.datetime(2024, 6, 10, 23, 59, 59, 999000, tzinfo=dt.UTC)


def row(asset, price, *, at=AT, source="binance", quote="USDT") -> PriceRow:
    return PriceRow(asset.pk, source, quote, D(price), at)


def stored_prices() -> list[tuple[str, str, str, dt.datetime, Decimal]]:
    return list(
        Price.objects.order_by("asset__symbol", "source", "observed_at").values_list(
            "asset__symbol", "source", "quote_currency", "observed_at", "price"
        )
    )


@pytest.mark.django_db
def test_prices_of_every_digit_the_column_holds_are_stored_exactly():
    # Given the widest, the smallest and an awkward price of the 28-digit, 10-decimal column
    bnb = AssetFactory(symbol="BNB")
    values = ["999999999999999999.9999999999", "0.0000000001", "612.3400000001"]
    rows = [row(bnb, v, at=AT + dt.timedelta(days=n)) for n, v in enumerate(values)]

    # When they are stored
    new = prices_store(rows)

    # Then each reads back to the last digit
    assert new == 3
    read = list(Price.objects.order_by("observed_at").values_list("price", flat=True))
    assert [f"{price:f}" for price in read] == values
    assert read == [D(v) for v in values]


@pytest.mark.django_db
def test_storing_the_same_observations_again_stores_nothing_and_changes_nothing():
    bnb = AssetFactory(symbol="BNB")
    prices_store([row(bnb, "600"), row(bnb, "601", at=AT + dt.timedelta(days=1))])
    before = list(Price.objects.order_by("id").values("id", "price", "fetched_at"))

    # A second run, with another price for the first observation
    again = prices_store([row(bnb, "650"), row(bnb, "601", at=AT + dt.timedelta(days=1))])

    assert again == 0
    assert list(Price.objects.order_by("id").values("id", "price", "fetched_at")) == before


@pytest.mark.django_db
def test_a_batch_with_an_observation_twice_stores_it_once_the_first_one():
    bnb = AssetFactory(symbol="BNB")
    later = AT + dt.timedelta(days=1)

    new = prices_store([row(bnb, "600"), row(bnb, "610", at=later), row(bnb, "999")])

    assert new == 2
    assert stored_prices() == [
        ("BNB", "binance", "USDT", AT, D("600")),
        ("BNB", "binance", "USDT", later, D("610")),
    ]


@pytest.mark.django_db
def test_the_same_time_from_another_source_or_quote_currency_is_another_observation():
    bnb = AssetFactory(symbol="BNB")
    btc = AssetFactory(symbol="BTC")

    new = prices_store(
        [
            row(bnb, "600"),
            row(bnb, "601", source="coingecko", quote="USD"),
            row(bnb, "602", quote="USD"),
            row(btc, "97000"),
        ]
    )

    assert new == 4
    assert Price.objects.count() == 4


@pytest.mark.django_db
def test_a_price_the_table_refuses_refuses_the_whole_batch_and_keeps_the_transaction():
    bnb = AssetFactory(symbol="BNB")
    later = AT + dt.timedelta(days=1)
    with transaction.atomic():
        # Given a price stored earlier in the caller's transaction
        assert prices_store([row(bnb, "600")]) == 1

        # When a batch holds a price that is not positive (the check constraint refuses it)
        with pytest.raises(IntegrityError, match="portfolio_price_price_positive"):
            prices_store([row(bnb, "610", at=later), row(bnb, "0", at=later + later.resolution)])

        # Then nothing of the batch is stored, the earlier price is kept, and the transaction
        # goes on: the next batch stores exactly its own rows
        assert stored_prices() == [("BNB", "binance", "USDT", AT, D("600"))]
        assert prices_store([row(bnb, "610", at=later)]) == 1
    assert Price.objects.count() == 2


@pytest.mark.django_db
def test_model_instances_keep_who_entered_them_and_are_stamped_when_stored():
    bnb = AssetFactory(symbol="BNB")
    admin = UserFactory(username="admin")
    before = timezone.now()

    prices_store(
        [Price(asset=bnb, source="manual", price=D("611.5"), observed_at=AT, entered_by=admin)]
    )

    price = Price.objects.get()
    assert (price.source, price.quote_currency, price.price) == ("manual", "USD", D("611.5"))
    assert price.entered_by == admin
    assert before <= price.fetched_at <= timezone.now()


@pytest.mark.django_db
def test_an_empty_batch_stores_nothing():
    assert prices_store([]) == 0
    assert Price.objects.count() == 0


def test_storable_price_rounds_half_even_to_the_last_place_and_refuses_what_does_not_fit():
    assert storable_price(D("612.34000000005")) == D("612.3400000000")
    assert storable_price(D("612.34000000015")) == D("612.3400000002")
    assert storable_price(D("6.1234e-05")) == D("0.0000612340")
    assert storable_price(D("0.00000000004")) is None
    assert storable_price(D("1E+18")) is None
    assert storable_price(D("999999999999999999.99999999994")) == D("999999999999999999.9999999999")


@pytest.mark.django_db
def test_a_stored_official_rate_is_never_overwritten(market):
    AssetFactory(symbol="KZTE", binance_symbol="", coingecko_id="", peg_currency="KZT")
    today = timezone.localdate()
    FxRate.objects.create(rate=D("499"), date=today)
    market.nbk[today] = {"USD": ("500.00", "1")}

    report = price_services.prices_fetch_latest(provider="nbk")

    assert report.stored == 1  # the peg price; the rate of the day was stored already
    assert list(FxRate.objects.values_list("rate", flat=True)) == [D("499")]


# ---------------------------------------------------------------------------------------------
# Races: real transactions on PostgreSQL
# ---------------------------------------------------------------------------------------------


def waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("writer_commits", "stored_by_us", "bnb_price"), [(True, 1, "600"), (False, 2, "650")]
)
def test_a_concurrent_writers_row_wins_and_ours_waits_for_it(
    writer_commits, stored_by_us, bnb_price
):
    # Given another transaction that has stored BNB's price and not yet ended
    bnb = AssetFactory(symbol="BNB")
    later = AT + dt.timedelta(days=1)
    stored, finish, ours = threading.Event(), threading.Event(), {}

    def concurrent_writer():
        try:
            with transaction.atomic():
                prices_store([row(bnb, "600")])
                stored.set()
                assert finish.wait(timeout=30)
                if not writer_commits:
                    transaction.set_rollback(True)
        finally:
            connection.close()

    def our_store():
        try:
            ours["new"] = prices_store([row(bnb, "650"), row(bnb, "651", at=later)])
        except Exception as exc:  # shown by the assertion below
            ours["new"] = repr(exc)
        finally:
            connection.close()

    writer = threading.Thread(target=concurrent_writer)
    writer.start()
    assert stored.wait(timeout=30)

    # When we store the same observation (and another): we wait for the other transaction
    us = threading.Thread(target=our_store)
    us.start()
    for _ in range(300):
        if waiting_on_a_lock():
            break
        threading.Event().wait(0.05)
    waited = waiting_on_a_lock()
    finish.set()
    writer.join(timeout=30)
    us.join(timeout=30)

    # Then its row wins if it committed, ours is stored if it rolled back
    assert waited == 1
    assert ours["new"] == stored_by_us
    assert stored_prices() == [
        ("BNB", "binance", "USDT", AT, D(bnb_price)),
        ("BNB", "binance", "USDT", later, D("651")),
    ]
