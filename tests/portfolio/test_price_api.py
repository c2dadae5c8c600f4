"""``GET /api/v1/prices/?asset=BNB``: recent prices per source and the consensus."""

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import path
from django.utils import timezone
from rest_framework.test import APIClient

from portfolio.api.prices import PriceView
from portfolio.models import Price
from tests.factories import AssetFactory, PriceFactory, UserFactory

# The route as alem/api_urls.py declares it; this module is the URLconf of its tests.
urlpatterns = [path("api/v1/prices/", PriceView.as_view(), name="prices")]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

URL = "/api/v1/prices/"


@pytest.fixture
def client():
    client = APIClient()
    client.force_authenticate(UserFactory(username="auditor"))
    return client


@pytest.fixture
def bnb():
    return AssetFactory(symbol="BNB", binance_symbol="BNBUSDT", coingecko_id="binancecoin")


def test_prices_show_recent_quotes_per_source_and_the_usable_consensus(client, bnb):
    now = timezone.now().replace(microsecond=0)
    PriceFactory(
        asset=bnb,
        source=Price.Source.BINANCE,
        quote_currency="USDT",
        price=Decimal("612.34"),
        observed_at=now - dt.timedelta(minutes=1),
    )
    PriceFactory(
        asset=bnb,
        source=Price.Source.BINANCE,
        quote_currency="USDT",
        price=Decimal("611.00"),
        observed_at=now - dt.timedelta(minutes=2),
    )
    PriceFactory(
        asset=bnb,
        source=Price.Source.COINGECKO,
        price=Decimal("612.1"),
        observed_at=now - dt.timedelta(minutes=3),
    )

    response = client.get(URL, {"asset": "bnb"})

    assert response.status_code == 200
    body = response.json()
    assert body["asset"] == "BNB"
    consensus = body["consensus"]
    assert consensus["price_usd"] == "612.2200000000"
    assert consensus["usable"] is True
    assert consensus["flags"] == []
    assert 60 <= consensus["age_seconds"] <= 120
    assert consensus["max_divergence"] == "0.02"
    assert consensus["stale_after_seconds"] == 900
    assert [
        (q["source"], q["price"], q["quote_currency"], q["fresh"]) for q in consensus["quotes"]
    ] == [
        ("binance", "612.3400000000", "USDT", True),
        ("coingecko", "612.1000000000", "USD", True),
    ]
    assert [(s["source"], [p["price"] for p in s["prices"]]) for s in body["sources"]] == [
        ("binance", ["612.3400000000", "611.0000000000"]),
        ("coingecko", ["612.1000000000"]),
    ]
    assert body["sources"][0]["prices"][0]["manual"] is False


def test_a_stale_single_source_price_is_flagged_and_not_usable(client, bnb):
    PriceFactory(
        asset=bnb,
        source=Price.Source.MANUAL,
        price=Decimal("600"),
        observed_at=timezone.now() - dt.timedelta(hours=2),
    )

    response = client.get(URL, {"asset": "BNB"})

    consensus = response.json()["consensus"]
    assert consensus["flags"] == ["stale"]
    assert consensus["usable"] is False
    assert consensus["price_usd"] == "600.0000000000"
    assert response.json()["sources"][0]["prices"][0]["manual"] is True


def test_an_asset_never_priced_has_no_consensus_price(client, bnb):
    response = client.get(URL, {"asset": "BNB"})

    assert response.status_code == 200
    assert response.json()["consensus"]["price_usd"] is None
    assert response.json()["consensus"]["flags"] == ["missing"]
    assert response.json()["sources"] == []


def test_limit_caps_the_recent_prices_per_source(client, bnb):
    now = timezone.now()
    for minutes in range(5):
        PriceFactory(asset=bnb, source="binance", observed_at=now - dt.timedelta(minutes=minutes))

    response = client.get(URL, {"asset": "BNB", "limit": 2})

    assert [len(s["prices"]) for s in response.json()["sources"]] == [2]


def test_the_asset_is_required(client):
    response = client.get(URL)

    assert response.status_code == 400
    assert response.json() == {"asset": ["This field is required."]}


def test_an_unknown_asset_is_404(client):
    response = client.get(URL, {"asset": "DOGE"})

    assert response.status_code == 404
    assert response.json() == {"detail": "No asset 'DOGE'."}


def test_prices_need_an_authenticated_caller(bnb):
    response = APIClient().get(URL, {"asset": "BNB"})

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
