"""The back office (Django admin) for the books: funds, assets, sources, prices, the ledger."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portfolio import services as books
from portfolio.models import Asset, Fund, FundingSource, FxRate, LedgerEntry, Price
from tests.factories import PriceFactory, UserFactory
from tests.web import signed_in

PORTFOLIO_MODELS = [Fund, Asset, FundingSource, Price, FxRate, LedgerEntry]


@pytest.fixture
def admin_web(client, db):
    return signed_in(client, UserFactory(username="siteadmin", is_staff=True, is_superuser=True))


@pytest.fixture
def usd_kzt(db):
    return FxRate.objects.create(rate=Decimal("512.34"), date=dt.date(2026, 1, 5))


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


def admin_url(model, view: str, *args) -> str:
    return url(f"{model._meta.app_label}_{model._meta.model_name}_{view}", *args)


@pytest.mark.parametrize("model", PORTFOLIO_MODELS, ids=lambda m: m._meta.model_name)
def test_every_portfolio_changelist_and_object_page_opens_for_a_superuser(
    alem, usd_kzt, admin_web, model
):
    obj = model._default_manager.order_by("pk").first()
    assert obj is not None, f"the fixture has no {model.__name__} to open"

    changelist = admin_web.get(admin_url(model, "changelist"))
    change = admin_web.get(admin_url(model, "change", obj.pk))

    assert changelist.status_code == 200
    assert change.status_code == 200


# ---------------------------------------------------------------------------------------------
# The ledger and market data are read-only
# ---------------------------------------------------------------------------------------------


def test_ledger_entries_cannot_be_added_changed_or_deleted_even_by_a_superuser(alem, admin_web):
    entry = LedgerEntry.objects.get(fund=alem.fund)
    count = LedgerEntry.objects.count()

    add = admin_web.post(
        admin_url(LedgerEntry, "add"),
        {"fund": alem.fund.pk, "kind": "contribution", "quantity": "1", "value_usd": "1"},
    )
    change = admin_web.post(
        admin_url(LedgerEntry, "change", entry.pk),
        {"fund": alem.fund.pk, "kind": "fee", "quantity": "1", "value_usd": "1"},
    )
    delete = admin_web.post(admin_url(LedgerEntry, "delete", entry.pk), {"post": "yes"})

    entry.refresh_from_db()
    assert (add.status_code, change.status_code, delete.status_code) == (403, 403, 403)
    assert LedgerEntry.objects.count() == count
    assert (entry.kind, entry.quantity) == ("contribution", Decimal("25000000.00"))


def test_prices_cannot_be_edited_in_admin(alem, admin_web):
    price = Price.objects.get(asset=alem.asset, source=Price.Source.BINANCE)

    change = admin_web.post(admin_url(Price, "change", price.pk), {"price": "1.00"})
    delete = admin_web.post(admin_url(Price, "delete", price.pk), {"post": "yes"})

    price.refresh_from_db()
    assert (change.status_code, delete.status_code) == (403, 403)
    assert price.price == Decimal("600.00")


def test_fx_rates_cannot_be_edited_in_admin(usd_kzt, admin_web):
    change = admin_web.post(admin_url(FxRate, "change", usd_kzt.pk), {"rate": "1.00"})

    usd_kzt.refresh_from_db()
    assert change.status_code == 403
    assert usd_kzt.rate == Decimal("512.34")


# ---------------------------------------------------------------------------------------------
# Funds: the mandate is set at creation and read-only afterwards
# ---------------------------------------------------------------------------------------------


def test_fund_created_in_admin_gets_its_mandate(db, admin_web):
    bnb, _ = Asset.objects.get_or_create(symbol="BNB", defaults={"name": "BNB"})

    response = admin_web.post(
        admin_url(Fund, "add"),
        {
            "name": "Mining Revenue Reserve",
            "slug": "mining",
            "reporting_currency": "KZT",
            "max_asset_share": "0.50",
            "max_proposal_notional_usd": "3000000.00",
            "execution_window_days": "4",
            "price_tolerance": "0.02",
            "max_fee_share": "0.005",
            "custody_cooling_off_hours": "24",
            "whitelisted_assets": [bnb.pk],
        },
    )

    fund = Fund.objects.get(slug="mining")
    assert response.status_code == 302
    assert (
        fund.max_asset_share,
        fund.max_proposal_notional_usd,
        fund.execution_window_days,
        fund.max_fee_share,
        fund.custody_cooling_off_hours,
    ) == (Decimal("0.50"), Decimal("3000000.00"), 4, Decimal("0.005"), 24)
    assert list(fund.whitelisted_assets.all()) == [bnb]


@pytest.mark.parametrize("share", ["1", "-0.01"])
def test_fund_with_a_fee_share_outside_0_to_1_is_not_created(db, admin_web, share):
    response = admin_web.post(
        admin_url(Fund, "add"),
        {
            "name": "Mining Revenue Reserve",
            "slug": "mining",
            "reporting_currency": "KZT",
            "max_asset_share": "0.50",
            "max_proposal_notional_usd": "3000000.00",
            "execution_window_days": "4",
            "price_tolerance": "0.02",
            "max_fee_share": share,
            "custody_cooling_off_hours": "48",
        },
    )

    assert response.status_code == 200
    assert "portfolio_fund_max_fee_share_in_range" in response.content.decode()
    assert not Fund.objects.filter(slug="mining").exists()


def test_fund_mandate_is_read_only_after_creation(alem, admin_web):
    fund = alem.fund
    other = Asset.objects.create(symbol="DOGE", name="Dogecoin")

    response = admin_web.post(
        admin_url(Fund, "change", fund.pk),
        {
            "name": "Alem Crypto Fund (renamed)",
            "reporting_currency": "KZT",
            "slug": "hijacked",
            "max_asset_share": "0.99",
            "max_proposal_notional_usd": "999999999.00",
            "execution_window_days": "90",
            "price_tolerance": "0.50",
            "max_fee_share": "0.99",
            "whitelisted_assets": [other.pk],
        },
    )

    fund.refresh_from_db()
    assert response.status_code == 302
    assert fund.name == "Alem Crypto Fund (renamed)"
    assert fund.slug == "alem"
    assert (
        fund.max_asset_share,
        fund.max_proposal_notional_usd,
        fund.execution_window_days,
        fund.price_tolerance,
        fund.max_fee_share,
    ) == (Decimal("0.40"), Decimal("5000000.00"), 5, Decimal("0.02"), Decimal("0.01"))
    assert list(fund.whitelisted_assets.all()) == [alem.asset]


def test_funds_cannot_be_deleted_in_admin(alem, admin_web):
    response = admin_web.post(admin_url(Fund, "delete", alem.fund.pk), {"post": "yes"})

    assert response.status_code == 403
    assert Fund.objects.filter(pk=alem.fund.pk).exists()


def test_asset_symbol_is_read_only_after_creation(alem, admin_web):
    response = admin_web.post(
        admin_url(Asset, "change", alem.asset.pk),
        {"symbol": "XXX", "name": "Build N Build", "chain": "BNB Smart Chain"},
    )

    alem.asset.refresh_from_db()
    assert response.status_code == 302
    assert (alem.asset.symbol, alem.asset.name) == ("BNB", "Build N Build")


def test_funding_source_stays_with_its_fund(alem, admin_web):
    other = Fund.objects.create(
        name="Other",
        slug="other",
        max_asset_share=Decimal("0.5"),
        max_proposal_notional_usd=Decimal("1000"),
        price_tolerance=Decimal("0.02"),
    )
    source = alem.funding_source

    response = admin_web.post(
        admin_url(FundingSource, "change", source.pk),
        {"fund": other.pk, "name": "Budget 2026", "kind": "budget_allocation"},
    )

    source.refresh_from_db()
    assert response.status_code == 302
    assert (source.fund, source.name) == (alem.fund, "Budget 2026")


# ---------------------------------------------------------------------------------------------
# Changelists cost the same whatever their length
# ---------------------------------------------------------------------------------------------


def _queries(web, model) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = web.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    return len(ctx.captured_queries)


def _add_rows(alem, model, count: int) -> None:
    booker = alem.users["fundadmin"]
    start = model._default_manager.count()
    for n in range(start, start + count):
        if model is LedgerEntry:
            books.ledger_entry_book(
                fund=alem.fund,
                kind=LedgerEntry.Kind.CONTRIBUTION,
                quantity=Decimal("1000.00"),
                value_usd=Decimal("1000.00"),
                funding_source=alem.funding_source,
                reference=f"tranche-{n}",
                booked_by=booker,
            )
        else:
            PriceFactory(
                asset=alem.asset,
                price=Decimal("600.00") + n,
                observed_at=timezone.now() - dt.timedelta(hours=n + 1),
                entered_by=booker,
            )


@pytest.mark.parametrize("model", [LedgerEntry, Price], ids=lambda m: m._meta.model_name)
def test_changelist_queries_do_not_grow_with_rows(alem, admin_web, model):
    _add_rows(alem, model, 5)
    admin_web.get(admin_url(model, "changelist"))  # warm caches
    with_few = _queries(admin_web, model)

    _add_rows(alem, model, 45)
    with_many = _queries(admin_web, model)

    assert model._default_manager.count() >= 50
    assert with_many == with_few
