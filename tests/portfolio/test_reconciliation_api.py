"""The reconciliation in the v1 API: status and breaks per fund, explaining, uploading."""

import io
from decimal import Decimal

import pytest
from eth_account import Account

from governance.models import AuditEvent
from portfolio.models import Asset, BalanceObservation, ReconciliationBreak
from portfolio.reconciliation.services import reconciliation_run
from tests.api import client_for
from tests.factories import UserFactory
from tests.portfolio.reconciliation_fixtures import (
    book_coins,
    custody_account,
    evm_test_chain,
    send_on_chain,
)
from tests.web import signed_in

BSC = "BNB Smart Chain"


@pytest.fixture
def cold_with_break(alem, settings, monkeypatch):
    """A BNB cold wallet holding 2 BNB on chain against 1.5 in the ledger: one open break."""
    chain = evm_test_chain(settings, monkeypatch)
    Asset.objects.filter(pk=alem.asset.pk).update(chain=BSC)
    cold = custody_account(alem.fund, name="Cold 1", chain=BSC, address=Account.create().address)
    send_on_chain(chain, cold.address, 2 * 10**18)
    book_coins(alem, cold, Asset.objects.get(pk=alem.asset.pk), "1.5")
    reconciliation_run()
    return cold


def url(fund, tail=""):
    return f"/api/v1/funds/{fund.pk}/reconciliation/{tail}"


def test_the_status_lists_balances_and_open_breaks_as_exact_strings(alem, cold_with_break):
    response = client_for(alem.users["auditor"]).get(url(alem.fund))

    assert response.status_code == 200
    body = response.json()
    (balance,) = body["balances"]
    assert balance["account"] == cold_with_break.pk
    assert (balance["asset"], balance["ledger_quantity"], balance["status"]) == (
        "BNB",
        "1.5",
        "open_break",
    )
    assert balance["latest_observation"]["observed_quantity"] == "2"
    (break_,) = body["open_breaks"]
    assert (break_["difference"], break_["state"], break_["explained_by"]) == ("0.5", "open", None)
    assert body["explained_breaks"] == []


@pytest.mark.parametrize("username", ["manager", "risk"])
def test_a_fund_outside_the_callers_reconciliation_roles_is_a_404(alem, username):
    assert client_for(alem.users[username]).get(url(alem.fund)).status_code == 404


def test_an_auditor_explains_a_break_and_a_second_explanation_gets_409(alem, cold_with_break):
    break_ = ReconciliationBreak.objects.get(account=cold_with_break)
    client = client_for(alem.users["auditor"])

    response = client.post(
        url(alem.fund, f"breaks/{break_.pk}/explain/"), {"explanation": "Airdrop."}, format="json"
    )
    again = client.post(
        url(alem.fund, f"breaks/{break_.pk}/explain/"), {"explanation": "Again."}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["explained_by"]) == ("explained", "auditor")
    assert again.status_code == 409
    assert again.json()["code"] == "break_not_open"


def test_a_treasury_operators_comment_gets_403_and_changes_nothing(alem, cold_with_break):
    break_ = ReconciliationBreak.objects.get(account=cold_with_break)
    events_before = AuditEvent.objects.count()

    response = client_for(alem.users["treasury"]).post(
        url(alem.fund, f"breaks/{break_.pk}/explain/"), {"explanation": "Fine."}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == "not_permitted"
    break_.refresh_from_db()
    assert break_.state == "open"
    assert AuditEvent.objects.count() == events_before


def test_a_statement_upload_records_balances_and_a_bad_line_gets_400(alem):
    exchange = custody_account(alem.fund, name="Exchange", chain=BSC, reference="EX-1")
    client = client_for(alem.users["treasury"])
    bad = io.BytesIO(b"asset,balance,as_of\nBNB,1,2026-01-01\nBNB,x,2026-01-01\n")
    bad.name = "bad.csv"
    good = io.BytesIO(b"asset,balance,as_of\nBNB,0.000000000000000001,2026-01-01\n")
    good.name = "good.csv"

    refused = client.post(
        url(alem.fund, "statements/"), {"account": exchange.pk, "file": bad}, format="multipart"
    )
    assert refused.status_code == 400
    assert "Line 3" in str(refused.json())
    assert not BalanceObservation.objects.exists()

    response = client.post(
        url(alem.fund, "statements/"), {"account": exchange.pk, "file": good}, format="multipart"
    )
    assert response.status_code == 201
    (observation,) = response.json()
    assert observation["observed_quantity"] == "0.000000000000000001"
    # one wei-sized unit is within BNB's dust: no break
    assert not ReconciliationBreak.objects.exists()
    assert BalanceObservation.objects.get().observed_quantity == Decimal("1E-18")


def test_the_schema_documents_the_reconciliation_without_warnings(db):
    # Only these views: the rest of the API is being rewritten on the main branch.
    from django.urls import include, path
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.validation import validate_schema

    patterns = [path("api/v1/", include("portfolio.api.urls"))]
    GENERATOR_STATS.reset()
    schema = SchemaGenerator(patterns=patterns).get_schema(request=None, public=True)

    assert not GENERATOR_STATS, dict(GENERATOR_STATS._warn_cache)  # no warning, no error
    validate_schema(schema)
    explain = schema["paths"]["/api/v1/funds/{fund_id}/reconciliation/breaks/{break_id}/explain/"]
    assert set(explain["post"]["responses"]) == {"200", "400", "403", "404", "409"}
    statements = schema["paths"]["/api/v1/funds/{fund_id}/reconciliation/statements/"]["post"]
    assert "multipart/form-data" in statements["requestBody"]["content"]
    status = schema["paths"]["/api/v1/funds/{fund_id}/reconciliation/"]["get"]
    assert set(status["responses"]) == {"200", "404"}


def test_the_back_office_shows_observations_and_breaks_read_only(client, alem, cold_with_break):
    signed_in(client, UserFactory(username="siteadmin", is_staff=True, is_superuser=True))
    break_ = ReconciliationBreak.objects.get(account=cold_with_break)

    listing = client.get("/admin/portfolio/reconciliationbreak/")
    detail = client.get(f"/admin/portfolio/reconciliationbreak/{break_.pk}/change/")
    observations = client.get("/admin/portfolio/balanceobservation/")

    assert listing.status_code == 200
    assert "0.5" in listing.content.decode()
    assert detail.status_code == 200
    assert b'name="explanation"' not in detail.content  # nothing editable
    assert observations.status_code == 200
    assert client.get("/admin/portfolio/reconciliationbreak/add/").status_code == 403
