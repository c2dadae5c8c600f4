"""``GET, POST /api/v1/proposals/{id}/executions/`` and ``POST /api/v1/proposals/{id}/close/``.

The contract: 201 with the fill for a new one, 200 with the booked fill when its external
reference is posted again, 409 with the rule's code for a refusal (audited, nothing booked),
403 without ``execute_trades``, 404 outside the caller's funds, 400 for bad input (nothing
booked, nothing audited). BNB's consensus is USD 600.005 and the fund tolerates 2% (see
``tests/governance/test_executions.py``, which covers each rule in depth at the service level).
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.db.models import Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from governance import services
from governance.models import AuditEvent, Execution, Proposal, ProposalState
from portfolio import selectors as books
from portfolio.models import FundRole, LedgerEntry, Price
from tests.api import client_for
from tests.factories import FundBuilder, UserFactory, otp_code

D = Decimal
S = ProposalState
CASH = D("25000000.00")

EXECUTION_FIELDS = {
    "id",
    "tx_hash",
    "proposal",
    "kind",
    "quantity",
    "price_usd",
    "fee_usd",
    "fee_quantity",
    "cost_usd",
    "realised_pnl_usd",
    "account",
    "account_name",
    "destination_account",
    "destination_account_name",
    "venue",
    "external_ref",
    "executed_at",
    "recorded_by",
    "recorded_at",
    "evidence",
    "confirmed_by_device",
}


def url(proposal, action: str = "executions") -> str:
    return f"/api/v1/proposals/{proposal.pk}/" + (f"{action}/" if action else "")


def last_sequence() -> int:
    return AuditEvent.objects.aggregate(m=Max("sequence"))["m"] or 0


def new_events(since: int) -> list[tuple[str, str | None]]:
    return [
        (e.action, e.payload.get("code"))
        for e in AuditEvent.objects.filter(sequence__gt=since).order_by("sequence")
    ]


def books_of(proposal) -> tuple:
    """Everything a refused or malformed fill must leave as it was."""
    fresh = Proposal.objects.get(pk=proposal.pk)
    return (
        list(Execution.objects.values_list("pk", flat=True)),
        list(LedgerEntry.objects.values_list("pk", flat=True)),
        books.fund_holdings(fresh.fund),
        books.fund_cash_usd(fresh.fund),
        fresh.state,
        fresh.executed_notional_usd,
    )


def body(**changes) -> dict:
    values = {
        "quantity": "2.5",
        "price_usd": "600.00",
        "fee_usd": "1.25",
        "venue": "Binance",
        "external_ref": "BNB-order-1001",
        "executed_at": timezone.now().isoformat(),
    }
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


@pytest.fixture
def proposal(alem) -> Proposal:
    proposal = alem.approve_fully(alem.proposal(submit=True))
    assert proposal.state == S.APPROVED
    return proposal


@pytest.fixture
def treasury(alem) -> APIClient:
    return client_for(alem.users["treasury"])


# ---------------------------------------------------------------------------------------------
# Recording and reading fills
# ---------------------------------------------------------------------------------------------


def test_treasury_records_a_fill_and_gets_201_with_it(alem, proposal, treasury):
    executed_at = timezone.now()
    mark = last_sequence()

    response = treasury.post(
        url(proposal), body(executed_at=executed_at.isoformat()), format="json"
    )

    assert response.status_code == 201, response.json()
    data = response.json()
    assert set(data) == EXECUTION_FIELDS
    execution = Execution.objects.get()
    assert data["id"] == execution.pk
    assert data["proposal"] == proposal.pk
    assert data["quantity"] == "2.500000000000000000"
    assert data["price_usd"] == "600.0000000000"
    assert data["fee_usd"] == "1.2500000000000000000000000000"
    assert D(data["cost_usd"]) == D("1501.25")
    assert (data["kind"], D(data["fee_quantity"]), data["realised_pnl_usd"]) == ("buy", 0, None)
    assert (data["account"], data["destination_account"]) == (None, None)
    assert data["venue"] == "Binance"
    assert data["external_ref"] == "BNB-order-1001"
    assert parse_datetime(data["executed_at"]) == executed_at
    assert data["recorded_by"] == "treasury"
    assert D(data["evidence"]["price_usd"]) == D("600.005")
    assert books.fund_holdings(alem.fund) == [
        books.Holding(alem.asset.pk, "BNB", D("2.5"), D("1500"))
    ]
    assert books.fund_cash_usd(alem.fund) == CASH - D("1501.25")
    assert new_events(mark) == [("execution.recorded", None)]
    detail = treasury.get(url(proposal, "")).json()
    assert D(detail["executed_notional_usd"]) == D("1501.25")
    assert D(detail["remaining_notional_usd"]) == D("498498.75")
    assert detail["state"] == "approved"


def test_a_quantity_with_18_decimals_round_trips_exactly(alem, proposal, treasury):
    quantity, price = "1.234567890123456789", "600.0012345678"

    created = treasury.post(url(proposal), body(quantity=quantity, price_usd=price), format="json")
    listed = treasury.get(url(proposal)).json()
    positions = treasury.get(f"/api/v1/funds/{alem.fund.pk}/positions/").json()

    assert created.status_code == 201, created.json()
    assert created.json()["quantity"] == quantity
    assert [fill["quantity"] for fill in listed["results"]] == [quantity]
    # quantity x price + fee, all 28 decimals, as stored and as served
    assert created.json()["cost_usd"] == "741.9922582318381337577763907942"
    assert Execution.objects.get().quantity == D(quantity)
    [position] = positions["positions"]
    assert D(position["quantity"]) == D(quantity)


def test_the_same_external_reference_again_answers_200_with_the_booked_fill(
    alem, proposal, treasury
):
    first = treasury.post(url(proposal), body(), format="json")
    assert first.status_code == 201
    before = books_of(proposal)
    mark = last_sequence()

    again = treasury.post(url(proposal), body(), format="json")

    assert again.status_code == 200
    assert again.json() == first.json()
    assert books_of(proposal) == before
    assert new_events(mark) == []


def test_the_same_external_reference_on_another_proposal_gets_409(alem, proposal, treasury):
    assert treasury.post(url(proposal), body(), format="json").status_code == 201
    second = alem.approve_fully(alem.proposal(submit=True, notional_usd=D("100000.00")))
    before = books_of(second)

    response = treasury.post(url(second), body(), format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_external_ref"
    assert books_of(second) == before
    assert Execution.objects.get().proposal_id == proposal.pk


def test_the_fee_defaults_to_zero(alem, proposal, treasury):
    response = treasury.post(url(proposal), body(fee_usd=None), format="json")

    assert response.status_code == 201, response.json()
    assert D(response.json()["fee_usd"]) == 0
    assert D(response.json()["cost_usd"]) == D("1500")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.FEE).count() == 0


def test_json_numbers_are_accepted(alem, proposal, treasury):
    response = treasury.post(
        url(proposal), body(quantity=2.5, price_usd=600.5, fee_usd=0), format="json"
    )

    assert response.status_code == 201, response.json()
    assert Execution.objects.get().cost_usd == D("1501.25")


def test_the_last_fill_executes_the_proposal(alem, treasury):
    proposal = alem.approve_fully(alem.proposal(submit=True, notional_usd=D("6000.00")))

    response = treasury.post(
        url(proposal), body(quantity="10", price_usd="600", fee_usd="0"), format="json"
    )

    assert response.status_code == 201
    detail = treasury.get(url(proposal, "")).json()
    assert detail["state"] == "executed"
    assert D(detail["executed_notional_usd"]) == D("6000")
    assert D(detail["remaining_notional_usd"]) == 0


def test_close_in_the_body_executes_the_proposal(alem, proposal, treasury):
    mark = last_sequence()

    response = treasury.post(url(proposal), body(close=True), format="json")

    assert response.status_code == 201
    assert Proposal.objects.get(pk=proposal.pk).state == S.EXECUTED
    assert new_events(mark) == [("execution.recorded", None), ("proposal.executed", None)]


def test_fills_are_listed_in_execution_order_for_anyone_on_the_fund(alem, proposal, treasury):
    later = treasury.post(
        url(proposal), body(external_ref="b", executed_at=timezone.now().isoformat()), format="json"
    )
    earlier = treasury.post(
        url(proposal),
        body(external_ref="a", executed_at=proposal.decided_at.isoformat()),
        format="json",
    )
    assert (later.status_code, earlier.status_code) == (201, 201)

    response = client_for(alem.users["auditor"]).get(url(proposal))

    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert response.json()["results"] == [earlier.json(), later.json()]


# ---------------------------------------------------------------------------------------------
# Refusals: 409 with the rule's code, 403 without the role; nothing booked, the refusal audited
# ---------------------------------------------------------------------------------------------


def _expect_refusal(alem, proposal, client, payload, status, code):
    before = books_of(proposal)
    mark = last_sequence()

    response = client.post(url(proposal), payload, format="json")

    assert response.status_code == status, response.json()
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "detail"}
    assert books_of(proposal) == before
    assert new_events(mark) == [("execution.refused", code)]
    return response


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"quantity": "834", "fee_usd": "0"}, "over_notional"),
        ({"quantity": "833", "fee_usd": "200.01"}, "over_notional"),
        ({"price_usd": "650.0000000001"}, "above_limit_price"),
        ({"quantity": "2.5", "fee_usd": "15.01"}, "fee_above_limit"),  # 1% of 1500 is 15
        ({"price_usd": "612.0052"}, "price_outside_tolerance"),
        ({"price_usd": "588.0048"}, "price_outside_tolerance"),
        ({"executed_at": "2020-01-01T00:00:00Z"}, "executed_before_approval"),
        ({"executed_at": "2999-01-01T00:00:00+05:00"}, "executed_in_future"),
    ],
)
def test_a_fill_breaking_the_mandate_gets_409_with_the_rule(
    alem, proposal, treasury, changes, code
):
    _expect_refusal(alem, proposal, treasury, body(**changes), 409, code)


def test_a_tiny_fill_carrying_a_large_fee_gets_409_fee_above_limit(alem, proposal, treasury):
    # Red-team finding 8, as it was posted: 0.000001 BNB (USD 0.0006) with a USD 99,000 fee and
    # a valid one-time code. Its cost fits the notional; the fee is 165 million times the value.
    payload = body(
        quantity="0.000001",
        price_usd="600.00",
        fee_usd="99000.00",
        otp_token=otp_code(alem.users["treasury"]),
    )

    response = _expect_refusal(alem, proposal, treasury, payload, 409, "fee_above_limit")

    assert response.json()["detail"] == (
        "The fee of USD 99000 is above the fund's limit of 1.00% of the fill's value of "
        "USD 0.0006: at most USD 0.000006."
    )
    assert not Execution.objects.exists()
    assert not LedgerEntry.objects.filter(reference__startswith="execution:").exists()
    assert books.fund_cash_usd(alem.fund) == CASH
    detail = treasury.get(url(proposal, "")).json()
    assert (detail["state"], D(detail["executed_notional_usd"])) == ("approved", 0)


def test_a_fee_of_exactly_the_funds_share_gets_201(alem, proposal, treasury):
    response = treasury.post(url(proposal), body(quantity="2.5", fee_usd="15.00"), format="json")

    assert response.status_code == 201, response.json()
    assert D(response.json()["cost_usd"]) == D("1515")


def test_an_expired_approval_gets_409_approval_expired(alem, proposal, treasury):
    Proposal.objects.filter(pk=proposal.pk).update(
        approval_expires_at=timezone.now() - dt.timedelta(seconds=1)
    )

    _expect_refusal(alem, proposal, treasury, body(), 409, "approval_expired")


def test_an_expired_proposal_gets_409_invalid_state(alem, proposal, treasury):
    services.proposals_expire_due(now=timezone.now() + dt.timedelta(days=6))

    _expect_refusal(alem, proposal, treasury, body(), 409, "invalid_state")


def test_a_proposal_in_review_gets_409_invalid_state(alem, treasury):
    proposal = alem.proposal(submit=True)

    _expect_refusal(alem, proposal, treasury, body(), 409, "invalid_state")


def test_a_stale_consensus_gets_409_consensus_unusable(alem, proposal, treasury):
    Price.objects.filter(asset=alem.asset).update(
        observed_at=timezone.now() - dt.timedelta(hours=1)
    )

    response = _expect_refusal(alem, proposal, treasury, body(), 409, "consensus_unusable")

    assert "stale" in response.json()["detail"]


def test_the_author_gets_409_segregation_of_duties(alem, proposal):
    services.role_grant(user=alem.users["manager"], fund=alem.fund, role=FundRole.EXECUTE_TRADES)

    _expect_refusal(
        alem, proposal, client_for(alem.users["manager"]), body(), 409, "segregation_of_duties"
    )


def test_an_approver_gets_409_segregation_of_duties(alem, proposal):
    services.role_grant(user=alem.users["risk"], fund=alem.fund, role=FundRole.EXECUTE_TRADES)

    _expect_refusal(
        alem, proposal, client_for(alem.users["risk"]), body(), 409, "segregation_of_duties"
    )


@pytest.mark.parametrize("username", ["auditor", "manager2", "fundadmin"])
def test_without_execute_trades_gets_403(alem, proposal, username):
    _expect_refusal(alem, proposal, client_for(alem.users[username]), body(), 403, "not_permitted")


def test_without_execute_trades_a_repeated_reference_gets_403_too(alem, proposal, treasury):
    assert treasury.post(url(proposal), body(), format="json").status_code == 201

    response = client_for(alem.users["auditor"]).post(url(proposal), body(), format="json")

    assert response.status_code == 403


# ---------------------------------------------------------------------------------------------
# Outside the caller's funds, unauthenticated, malformed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_proposal_of_another_fund_is_404(alem, proposal, method):
    other = FundBuilder.alem_like(prefix="other_")
    before = books_of(proposal)
    mark = last_sequence()

    response = getattr(client_for(other.users["treasury"]), method)(
        url(proposal), body(), format="json"
    )

    assert response.status_code == 404
    assert books_of(proposal) == before
    assert new_events(mark) == []


def test_unauthenticated_gets_401(alem, proposal):
    before = books_of(proposal)

    response = APIClient().post(url(proposal), body(), format="json")

    assert response.status_code == 401
    assert books_of(proposal) == before


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"quantity": "1.0000000000000000001"}, "quantity"),  # 19 decimals
        ({"price_usd": "600.00000000001"}, "price_usd"),  # 11 decimals
        ({"quantity": "0"}, "quantity"),
        ({"quantity": "-1"}, "quantity"),
        ({"price_usd": "0"}, "price_usd"),
        ({"price_usd": "-600"}, "price_usd"),
        ({"fee_usd": "-0.01"}, "fee_usd"),
        ({"quantity": "NaN"}, "quantity"),
        ({"price_usd": "Infinity"}, "price_usd"),
        ({"quantity": "lots"}, "quantity"),
        ({"quantity": None}, "quantity"),
        ({"price_usd": None}, "price_usd"),
        ({"venue": None}, "venue"),
        ({"venue": ""}, "venue"),
        ({"external_ref": None}, "external_ref"),
        ({"external_ref": ""}, "external_ref"),
        ({"external_ref": "x" * 201}, "external_ref"),
        ({"executed_at": None}, "executed_at"),
        ({"executed_at": "yesterday"}, "executed_at"),
        ({"executed_at": "2025-06-30"}, "executed_at"),
        # Without its UTC offset the moment is ambiguous (Astana or UTC?): refused.
        ({"executed_at": "2025-06-30T09:30:00"}, "executed_at"),
        ({"close": "perhaps"}, "close"),
    ],
)
def test_bad_input_gets_400_and_books_nothing(alem, proposal, treasury, changes, field):
    before = books_of(proposal)
    mark = last_sequence()

    response = treasury.post(url(proposal), body(**changes), format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert books_of(proposal) == before
    assert new_events(mark) == []


def test_naive_time_error_names_the_offset(alem, proposal, treasury):
    response = treasury.post(url(proposal), body(executed_at="2025-06-30T09:30:00"), format="json")

    assert response.json() == {
        "executed_at": ["Give the time with its UTC offset, e.g. 2025-06-30T09:30:00Z or +05:00."]
    }


def test_a_time_with_an_offset_is_the_same_moment_in_any_zone(alem, proposal, treasury):
    moment = timezone.now()
    in_astana = moment.astimezone(dt.timezone(dt.timedelta(hours=5))).isoformat()

    response = treasury.post(url(proposal), body(executed_at=in_astana), format="json")

    assert response.status_code == 201, response.json()
    assert Execution.objects.get().executed_at == moment


# ---------------------------------------------------------------------------------------------
# POST /close/
# ---------------------------------------------------------------------------------------------


def test_close_executes_a_partly_filled_proposal(alem, proposal, treasury):
    assert treasury.post(url(proposal), body(), format="json").status_code == 201
    mark = last_sequence()

    response = treasury.post(url(proposal, "close"), {"reason": "Done for now."}, format="json")

    assert response.status_code == 200
    assert response.json()["state"] == "executed"
    assert new_events(mark) == [("proposal.executed", None)]
    payload = AuditEvent.objects.get(sequence=mark + 1).payload
    assert payload["reason"] == "Done for now."
    assert D(payload["unspent_usd"]) == D("498498.75")


def test_close_with_nothing_executed_gets_409(alem, proposal, treasury):
    response = treasury.post(url(proposal, "close"))

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_state"
    assert Proposal.objects.get(pk=proposal.pk).state == S.APPROVED


def test_close_without_execute_trades_gets_403(alem, proposal, treasury):
    assert treasury.post(url(proposal), body(), format="json").status_code == 201

    response = client_for(alem.users["auditor"]).post(url(proposal, "close"))

    assert response.status_code == 403
    assert Proposal.objects.get(pk=proposal.pk).state == S.APPROVED


def test_close_of_another_funds_proposal_is_404(alem, proposal):
    other = FundBuilder.alem_like(prefix="other_")

    response = client_for(other.users["treasury"]).post(url(proposal, "close"))

    assert response.status_code == 404
    assert Proposal.objects.get(pk=proposal.pk).state == S.APPROVED


def test_the_schema_documents_executions_and_close(db):
    schema = client_for(UserFactory()).get("/api/schema/")

    assert b"/api/v1/proposals/{id}/executions/" in schema.content
    assert b"/api/v1/proposals/{id}/close/" in schema.content
    assert b"remaining_notional_usd" in schema.content
