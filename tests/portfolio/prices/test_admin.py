"""The back office of fetches and failures: listed for administrators, changed by nobody."""

import pytest
from django.contrib.admin import AdminSite
from django.urls import path
from django.utils import timezone

from alem import urls as alem_urls
from portfolio.models import FetchFailure, PriceFetch
from portfolio.prices.admin import FetchFailureAdmin, PriceFetchAdmin
from tests.factories import AssetFactory, UserFactory

# A site of its own, so these tests do not depend on what portfolio.admin imports.
site = AdminSite(name="admin")
site.register(PriceFetch, PriceFetchAdmin)
site.register(FetchFailure, FetchFailureAdmin)
# The site's other pages stay routable: its 403 page links to them.
urlpatterns = [path("admin/", site.urls), *alem_urls.urlpatterns]
pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(username="admin", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def failed_fetch():
    now = timezone.now()
    fetch = PriceFetch.objects.create(
        provider="binance",
        outcome=PriceFetch.Outcome.PARTIAL,
        requested=["BNBUSDT", "NOPEUSDT"],
        stored=1,
        attempts=3,
        started_at=now,
        finished_at=now,
    )
    FetchFailure.objects.create(
        fetch=fetch,
        provider="binance",
        asset=AssetFactory(symbol="NOPE"),
        reason=FetchFailure.Reason.UNKNOWN_SYMBOL,
        http_status=400,
        detail="NOPEUSDT: Binance error -1121: Invalid symbol.",
        occurred_at=now,
    )
    return fetch


def test_fetches_are_listed_with_their_failure_count(superuser_client, failed_fetch):
    response = superuser_client.get("/admin/portfolio/pricefetch/")

    assert response.status_code == 200
    row = response.context["cl"].result_list[0]
    assert (row.provider, row.outcome, row.failure_total) == ("binance", "partial", 1)


def test_a_fetch_shows_its_failures_with_the_reason(superuser_client, failed_fetch):
    response = superuser_client.get(f"/admin/portfolio/pricefetch/{failed_fetch.id}/change/")

    assert response.status_code == 200
    assert "NOPEUSDT: Binance error -1121: Invalid symbol." in response.content.decode()


def test_failures_are_listed_and_filtered_by_reason(superuser_client, failed_fetch):
    response = superuser_client.get("/admin/portfolio/fetchfailure/?reason__exact=unknown_symbol")
    other = superuser_client.get("/admin/portfolio/fetchfailure/?reason__exact=timeout")

    assert [f.detail for f in response.context["cl"].result_list] == [
        "NOPEUSDT: Binance error -1121: Invalid symbol."
    ]
    assert list(other.context["cl"].result_list) == []


def test_nobody_adds_changes_or_deletes_fetches_or_failures(superuser_client, failed_fetch):
    failure = FetchFailure.objects.get()

    add = superuser_client.get("/admin/portfolio/pricefetch/add/")
    delete = superuser_client.post(
        f"/admin/portfolio/fetchfailure/{failure.id}/delete/", {"post": "yes"}
    )
    change = superuser_client.post(
        f"/admin/portfolio/fetchfailure/{failure.id}/change/", {"detail": "edited"}
    )

    assert (add.status_code, delete.status_code, change.status_code) == (403, 403, 403)
    failure.refresh_from_db()
    assert failure.detail == "NOPEUSDT: Binance error -1121: Invalid symbol."
    assert PriceFetch.objects.count() == 1
