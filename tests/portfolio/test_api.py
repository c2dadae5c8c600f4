"""The v1 funds and assets API, authentication, and the OpenAPI schema and docs."""

import io

import pytest
from axes.models import AccessAttempt
from django.core.management import call_command
from rest_framework.test import APIClient

from governance import services
from governance.api_tokens import token_digest
from governance.models import ApiToken
from tests.factories import AssetFactory, FundBuilder, UserFactory, otp_code, otp_device

FUNDS = "/api/v1/funds/"
ASSETS = "/api/v1/assets/"
TOKEN = "/api/v1/auth/token/"
PASSWORD = "pw-for-tests-only"  # UserFactory's


@pytest.fixture
def other(db):
    """A second fund with its own people, buying the same asset."""
    return FundBuilder.alem_like(prefix="other_", asset_symbol="BNB")


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


# ---------------------------------------------------------------------------------------------
# Funds
# ---------------------------------------------------------------------------------------------


def test_fund_list_shows_the_callers_fund_with_its_limits(alem, other):
    response = client_for(alem.users["risk"]).get(FUNDS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert body["next"] is None
    fund = body["results"][0]
    assert fund == {
        "id": alem.fund.pk,
        "name": "Alem Crypto Fund",
        "slug": "alem",
        "base_currency": "USD",
        "reporting_currency": "KZT",
        "max_asset_share": "0.400000",
        "max_proposal_notional_usd": "5000000.00",
        "execution_window_days": 5,
        "price_tolerance": "0.020000",
        "max_fee_share": "0.010000",
        "disclose_holdings": False,
        "disclosure_delay_days": 30,
        "disclose_deciders": False,
        "whitelisted_assets": ["BNB"],
        "funding_sources": [
            {
                "id": alem.funding_source.pk,
                "name": "Republican budget allocation",
                "kind": "budget_allocation",
            }
        ],
        "created_at": fund["created_at"],
    }


def test_user_with_roles_in_two_funds_lists_both(alem, other):
    services.role_grant(user=alem.users["auditor"], fund=other.fund, role="audit")

    response = client_for(alem.users["auditor"]).get(FUNDS)

    assert response.status_code == 200
    assert [f["slug"] for f in response.json()["results"]] == ["alem", "other-alem"]


def test_fund_detail_of_own_fund(alem):
    response = client_for(alem.users["treasury"]).get(f"{FUNDS}{alem.fund.pk}/")

    assert response.status_code == 200
    assert response.json()["id"] == alem.fund.pk
    assert response.json()["slug"] == "alem"
    assert response.json()["max_fee_share"] == "0.010000"


def test_fund_detail_of_another_fund_is_404(alem, other):
    response = client_for(alem.users["manager"]).get(f"{FUNDS}{other.fund.pk}/")

    assert response.status_code == 404
    assert "code" not in response.json()


def test_superuser_without_roles_sees_no_funds(alem):
    admin = UserFactory(username="admin", is_superuser=True, is_staff=True)
    client = client_for(admin)

    listing = client.get(FUNDS)
    detail = client.get(f"{FUNDS}{alem.fund.pk}/")

    assert listing.status_code == 200
    assert listing.json()["count"] == 0
    assert listing.json()["results"] == []
    assert detail.status_code == 404


def test_user_whose_role_was_revoked_no_longer_sees_the_fund(alem):
    services.role_revoke(actor=None, user=alem.users["risk"], fund=alem.fund, role="review_risk")

    response = client_for(alem.users["risk"]).get(FUNDS)

    assert response.status_code == 200
    assert response.json()["count"] == 0


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_funds_are_read_only(alem, method):
    client = client_for(alem.users["fundadmin"])

    response = getattr(client, method)(f"{FUNDS}{alem.fund.pk}/", {"name": "X"}, format="json")

    assert response.status_code == 405
    alem.fund.refresh_from_db()
    assert alem.fund.name == "Alem Crypto Fund"


# ---------------------------------------------------------------------------------------------
# Assets
# ---------------------------------------------------------------------------------------------


def test_asset_list_is_paginated_and_ordered_by_symbol(alem):
    AssetFactory(symbol="SOL", name="Solana", chain="Solana", coingecko_id="solana")
    AssetFactory(symbol="BTC", name="Bitcoin", chain="Bitcoin", coingecko_id="bitcoin")

    response = client_for(alem.users["auditor"]).get(ASSETS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert [a["symbol"] for a in body["results"]] == ["BNB", "BTC", "SOL"]
    assert body["results"][1] == {
        "id": body["results"][1]["id"],
        "symbol": "BTC",
        "name": "Bitcoin",
        "chain": "Bitcoin",
        "binance_symbol": "BTCUSDT",
        "coingecko_id": "bitcoin",
        "peg_currency": "",
    }


# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [FUNDS, ASSETS, f"{FUNDS}1/"])
def test_unauthenticated_requests_get_401(db, path):
    response = APIClient().get(path)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def token_request(username: str, password: str = PASSWORD, otp_token: str = ""):
    body = {"username": username, "password": password, "otp_token": otp_token}
    return APIClient().post(TOKEN, body, format="json")


def test_token_round_trip_with_the_password_and_a_current_code(alem):
    manager = alem.users["manager"]

    response = token_request("manager", otp_token=otp_code(manager))

    assert response.status_code == 200
    token = response.json()["token"]
    assert ApiToken.objects.get(user=manager).digest == token_digest(token)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    funds = client.get(FUNDS)
    assert funds.status_code == 200
    assert [f["id"] for f in funds.json()["results"]] == [alem.fund.pk]


def test_the_password_alone_gets_no_token(alem):
    otp_device(alem.users["manager"])

    response = token_request("manager")

    assert response.status_code == 400
    assert "token" not in response.json()
    assert ApiToken.objects.count() == 0


def test_a_wrong_code_gets_no_token_and_counts_as_a_failed_sign_in(alem):
    otp_device(alem.users["manager"])

    response = token_request("manager", otp_token="000000")

    assert response.status_code == 400
    assert response.json()["non_field_errors"] == [
        "The username, password or code is wrong. Check them and try again."
    ]
    assert ApiToken.objects.count() == 0
    assert AccessAttempt.objects.get(username="manager").failures_since_start == 1


def test_a_user_without_an_authenticator_gets_no_token(alem):
    response = token_request("manager", otp_token="123456")

    assert response.status_code == 400
    assert "set up an authenticator" in response.json()["otp_token"][0]
    assert ApiToken.objects.count() == 0


def test_token_request_with_a_wrong_password_gets_400_and_no_token(alem):
    manager = alem.users["manager"]

    response = token_request("manager", password="wrong", otp_token=otp_code(manager))

    assert response.status_code == 400
    assert "token" not in response.json()
    assert ApiToken.objects.count() == 0


def test_session_authentication_still_works(alem):
    # Through the sign-in page, as a browser signs in (django-axes needs the request).
    client = APIClient()
    signed_in = client.post("/accounts/login/", {"username": "manager", "password": PASSWORD})
    assert signed_in.status_code == 302

    response = client.get(FUNDS)

    assert response.status_code == 200
    assert response.json()["count"] == 1


# ---------------------------------------------------------------------------------------------
# OpenAPI schema and docs
# ---------------------------------------------------------------------------------------------


def test_schema_and_docs_are_served_to_signed_in_users(db):
    client = client_for(UserFactory())

    schema = client.get("/api/schema/")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert b"/api/v1/proposals/{id}/decisions/" in schema.content
    assert docs.status_code == 200


@pytest.mark.parametrize("path", ["/api/schema/", "/api/docs/"])
def test_schema_and_docs_refuse_anonymous_requests(db, path):
    response = APIClient().get(path)

    assert response.status_code == 401
    assert b"/api/v1/" not in response.content


def test_schema_generates_without_warnings_or_errors(db):
    # --fail-on-warn turns every drf-spectacular warning or error into a failure.
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=io.StringIO())
