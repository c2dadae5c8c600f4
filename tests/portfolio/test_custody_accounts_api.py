"""``GET /api/v1/funds/{id}/custody-accounts/``: where the fund keeps coins and what each account
holds, read-only and scoped like the fund itself."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from governance import services
from portfolio.models import Asset, CustodyAccount
from tests.api import client_for
from tests.factories import AssetFactory, CustodyAccountFactory, FundBuilder, UserFactory

D = Decimal
CHAIN = "BNB Smart Chain"


def accounts_url(fund) -> str:
    return f"/api/v1/funds/{fund.pk}/custody-accounts/"


@pytest.fixture
def fund(alem: FundBuilder) -> FundBuilder:
    """A cold multisig holding 100 BNB (cost USD 50,000.25) and 2.5 ETH, an exchange account
    holding nothing, and a removed custodian account."""
    Asset.objects.filter(pk=alem.asset.pk).update(chain=CHAIN)
    alem.asset.refresh_from_db()
    eth = AssetFactory(symbol="ETH", chain=CHAIN)
    alem.cold = CustodyAccountFactory(fund=alem.fund, name="Cold multisig", address="0x" + "1" * 40)
    alem.exchange = CustodyAccountFactory(
        fund=alem.fund,
        name="Exchange",
        kind=CustodyAccount.Kind.EXCHANGE,
        address="",
        account_reference="BN-7731",
    )
    alem.removed = CustodyAccountFactory(
        fund=alem.fund,
        name="Old custodian",
        kind=CustodyAccount.Kind.QUALIFIED_CUSTODIAN,
        active=False,
        removed_at=timezone.now() - dt.timedelta(hours=1),
    )
    for asset, quantity, cost in ((alem.asset, "100", "50000.25"), (eth, "2.5", "7500")):
        services.opening_balance_record(
            fund=alem.fund,
            funding_source=alem.funding_source,
            asset=asset,
            account=alem.cold,
            quantity=D(quantity),
            amount_usd=D(cost),
        )
    return alem


def test_the_funds_accounts_are_listed_by_name_with_what_each_holds(fund):
    response = client_for(fund.users["auditor"]).get(accounts_url(fund.fund))

    assert response.status_code == 200
    body = response.json()
    assert [a["name"] for a in body] == ["Cold multisig", "Exchange", "Old custodian"]
    cold, exchange, removed = body
    assert cold == {
        "id": fund.cold.pk,
        "name": "Cold multisig",
        "kind": "cold_multisig",
        "chain": CHAIN,
        "address": "0x" + "1" * 40,
        "account_reference": "",
        "active": True,
        "usable_from": cold["usable_from"],
        "created_at": cold["created_at"],
        "removed_at": None,
        "positions": [
            {"asset": "BNB", "quantity": "100", "cost_usd": "50000.25"},
            {"asset": "ETH", "quantity": "2.5", "cost_usd": "7500"},
        ],
    }
    assert (exchange["kind"], exchange["address"], exchange["account_reference"]) == (
        "exchange",
        "",
        "BN-7731",
    )
    assert exchange["positions"] == []
    assert (removed["active"], removed["positions"]) == (False, [])
    assert removed["removed_at"] is not None


def test_an_account_emptied_by_a_transfer_shows_no_position(fund):
    from tests.governance.test_operations import approved, execute

    fund.exchange = CustodyAccountFactory(fund=fund.fund, name="Exchange 2")
    proposal = approved(
        fund, "transfer", quantity=D("100"), account=fund.cold, destination_account=fund.exchange
    )
    execute(fund, proposal, "100")

    body = client_for(fund.users["auditor"]).get(accounts_url(fund.fund)).json()

    shown = {a["name"]: [(p["asset"], p["quantity"]) for p in a["positions"]] for a in body}
    assert shown["Cold multisig"] == [("ETH", "2.5")]
    assert shown["Exchange 2"] == [("BNB", "100")]


def test_another_funds_accounts_are_404(fund):
    other = FundBuilder.alem_like(prefix="other_")
    CustodyAccountFactory(fund=other.fund, name="Their cold")

    response = client_for(fund.users["auditor"]).get(accounts_url(other.fund))

    assert response.status_code == 404
    assert "Their cold" not in response.content.decode()


def test_a_superuser_without_roles_gets_404(fund):
    admin = UserFactory(username="admin", is_superuser=True, is_staff=True)

    assert client_for(admin).get(accounts_url(fund.fund)).status_code == 404


def test_unauthenticated_gets_401(fund):
    assert APIClient().get(accounts_url(fund.fund)).status_code == 401


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_accounts_cannot_be_written_through_the_api(fund, method):
    before = list(CustodyAccount.objects.values())

    response = getattr(client_for(fund.users["fundadmin"]), method)(
        accounts_url(fund.fund), {"name": "Rogue wallet", "chain": CHAIN}, format="json"
    )

    assert response.status_code == 405
    assert list(CustodyAccount.objects.values()) == before


def test_the_list_costs_the_same_queries_for_3_and_13_accounts(fund):
    client = client_for(fund.users["auditor"])
    with CaptureQueriesContext(connection) as few:
        assert len(client.get(accounts_url(fund.fund)).json()) == 3
    for number in range(10):
        account = CustodyAccountFactory(fund=fund.fund, name=f"Wallet {number:02}")
        services.opening_balance_record(
            fund=fund.fund,
            funding_source=fund.funding_source,
            asset=fund.asset,
            account=account,
            quantity=D("1"),
            amount_usd=D("600"),
        )

    with CaptureQueriesContext(connection) as many:
        assert len(client.get(accounts_url(fund.fund)).json()) == 13

    assert len(many) == len(few)


def test_the_schema_documents_the_endpoint_and_says_writes_need_two_administrators(db):
    schema = client_for(UserFactory()).get("/api/schema/?format=json").json()

    operation = schema["paths"]["/api/v1/funds/{id}/custody-accounts/"]["get"]
    assert "four eyes" in operation["description"]
    assert set(operation) >= {"responses", "summary"}
    assert set(schema["paths"]["/api/v1/funds/{id}/custody-accounts/"]) == {"get"}
    account = schema["components"]["schemas"]["CustodyAccount"]["properties"]
    assert {"kind", "chain", "address", "account_reference", "active", "usable_from"} <= set(
        account
    )
    assert {"removed_at", "positions"} <= set(account)
    assert schema["components"]["schemas"]["CustodyAccountKindEnum"]["enum"] == [
        "cold_multisig",
        "qualified_custodian",
        "exchange",
    ]
