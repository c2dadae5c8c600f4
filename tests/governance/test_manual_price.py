"""Manual prices: entered by site administrators only, marked manual, audited."""

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from governance import services
from governance.audit import audit_verify
from governance.exceptions import NotPermitted
from governance.models import AuditEvent
from portfolio.exceptions import PortfolioError
from portfolio.models import Price
from portfolio.prices.selectors import consensus_for
from tests.factories import AssetFactory, UserFactory
from tests.web import signed_in


@pytest.fixture
def superuser(db):
    return UserFactory(username="siteadmin", is_staff=True, is_superuser=True)


def test_site_administrator_enters_a_manual_price_that_is_marked_and_audited(superuser):
    asset = AssetFactory(symbol="BNB")
    seen = timezone.now() - dt.timedelta(minutes=5)

    price = services.price_enter_manual(
        actor=superuser, asset=asset, price=Decimal("612.3400000001"), observed_at=seen
    )

    assert price.source == Price.Source.MANUAL
    assert price.entered_by == superuser
    assert price.price == Decimal("612.3400000001")
    event = AuditEvent.objects.get(action="price.entered_manually")
    assert event.actor == superuser
    assert event.payload == {
        "price": price.pk,
        "asset": "BNB",
        "price_usd": "612.3400000001",
        "observed_at": seen.isoformat(),
    }
    assert audit_verify().ok


def test_a_manual_price_alone_cannot_back_an_approval(superuser):
    asset = AssetFactory(symbol="BNB")

    services.price_enter_manual(actor=superuser, asset=asset, price=Decimal("600"))

    consensus = consensus_for(asset)
    assert consensus.price == Decimal("600")
    assert consensus.flags == ("single_source",)
    assert not consensus.usable


def test_staff_without_superuser_cannot_enter_a_manual_price(db):
    staff = UserFactory(username="staff", is_staff=True)
    asset = AssetFactory(symbol="BNB")

    with pytest.raises(NotPermitted):
        services.price_enter_manual(actor=staff, asset=asset, price=Decimal("600"))

    assert not Price.objects.exists()
    # nothing but the staff account's creation, itself on the record
    assert not AuditEvent.objects.exclude(action="user.account_changed").exists()


@pytest.mark.parametrize("bad", [Decimal("0"), Decimal("-1"), Decimal("1.00000000001")])
def test_an_invalid_manual_price_stores_nothing_and_audits_nothing(superuser, bad):
    asset = AssetFactory(symbol="BNB")

    with pytest.raises(PortfolioError):
        services.price_enter_manual(actor=superuser, asset=asset, price=bad)

    assert not Price.objects.exists()
    # nothing but the staff account's creation, itself on the record
    assert not AuditEvent.objects.exclude(action="user.account_changed").exists()


def test_admin_page_enters_a_manual_price_through_the_service(client, superuser):
    asset = AssetFactory(symbol="BNB")
    signed_in(client, superuser)
    url = reverse("admin:portfolio_price_manual")

    assert client.get(url).status_code == 200
    response = client.post(url, {"asset": asset.pk, "price": "601.25", "observed_at": ""})

    assert response.status_code == 302
    price = Price.objects.get()
    assert (price.source, price.price, price.entered_by) == ("manual", Decimal("601.25"), superuser)
    assert AuditEvent.objects.filter(action="price.entered_manually").count() == 1


def test_admin_page_shows_the_refusal_and_stores_nothing_for_a_future_time(client, superuser):
    asset = AssetFactory(symbol="BNB")
    signed_in(client, superuser)
    future = (timezone.localtime() + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")

    response = client.post(
        reverse("admin:portfolio_price_manual"),
        {"asset": asset.pk, "price": "601.25", "observed_at": future},
    )

    assert response.status_code == 200
    assert "cannot be observed in the future" in response.content.decode()
    assert not Price.objects.exists()
    # nothing but the staff account's creation, itself on the record
    assert not AuditEvent.objects.exclude(action="user.account_changed").exists()


def test_admin_manual_price_page_refuses_staff_without_superuser(client, db):
    staff = UserFactory(username="staff", is_staff=True)
    signed_in(client, staff)

    response = client.get(reverse("admin:portfolio_price_manual"))

    assert response.status_code == 403
