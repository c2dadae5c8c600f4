"""The v1 proposals API: the contract's fields, the error contract, scoping and bad input."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from governance import selectors, services
from governance.api.serializers import ProposalSerializer, StageStatusSerializer
from governance.models import AuditEvent, Decision, Proposal, ProposalState
from tests.api import client_for
from tests.factories import FundBuilder, UserFactory

PROPOSALS = "/api/v1/proposals/"

CONTRACT_FIELDS = {
    "id",
    "fund",
    "kind",
    "asset",
    "side",
    "quantity",
    "executed_quantity",
    "remaining_quantity",
    "account",
    "account_name",
    "destination_account",
    "destination_account_name",
    "document_reference",
    "notional_usd",
    "remaining_notional_usd",
    "limit_price_usd",
    "rationale",
    "funding_source",
    "state",
    "version",
    "author",
    "stages",
    "current_stage",
    "submitted_at",
    "approval_expires_at",
    "executed_notional_usd",
    "compliance",
}


def url(proposal, action: str = "") -> str:
    return f"{PROPOSALS}{proposal.pk}/" + (f"{action}/" if action else "")


def new_events(since: int) -> list[tuple[str, dict]]:
    return [(e.action, e.payload) for e in AuditEvent.objects.filter(sequence__gt=since)]


def last_sequence() -> int:
    event = AuditEvent.objects.order_by("-sequence").first()
    return event.sequence if event else 0


@pytest.fixture
def other(db):
    """A second fund with its own people, buying the same asset."""
    return FundBuilder.alem_like(prefix="other_", asset_symbol="BNB")


@pytest.fixture
def terms(alem):
    return {
        "fund": alem.fund.pk,
        "asset": "BNB",
        "notional_usd": "500000.00",
        "limit_price_usd": "650.00",
        "rationale": "Build the strategic BNB position.",
        "funding_source": alem.funding_source.pk,
    }


# ---------------------------------------------------------------------------------------------
# Creating and reading
# ---------------------------------------------------------------------------------------------


def test_manager_creates_a_draft_with_the_contract_fields(alem, terms):
    response = client_for(alem.users["manager"]).post(PROPOSALS, terms, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == CONTRACT_FIELDS
    proposal = Proposal.objects.get()
    assert body["id"] == proposal.pk
    assert body["fund"] == alem.fund.pk
    assert body["asset"] == "BNB"
    assert body["kind"] == "buy"
    assert body["side"] == "buy"
    assert body["quantity"] is None
    assert body["executed_quantity"] == "0.000000000000000000"
    assert body["remaining_quantity"] is None
    assert (body["account"], body["account_name"]) == (None, None)
    assert (body["destination_account"], body["destination_account_name"]) == (None, None)
    assert body["document_reference"] == ""
    assert body["notional_usd"] == "500000.00"
    assert body["limit_price_usd"] == "650.0000000000"
    assert body["rationale"] == "Build the strategic BNB position."
    assert body["funding_source"] == alem.funding_source.pk
    assert body["state"] == "draft"
    assert body["version"] == 1
    assert body["author"] == "manager"
    assert body["stages"] == []
    assert body["current_stage"] is None
    assert body["submitted_at"] is None
    assert body["approval_expires_at"] is None
    assert Decimal(body["executed_notional_usd"]) == 0
    assert body["compliance"] == {}
    assert proposal.author == alem.users["manager"]
    assert proposal.notional_usd == Decimal("500000.00")
    assert [e.action for e in proposal.events.all()] == ["proposal.created"]


def test_json_numbers_are_accepted_as_amounts(alem, terms):
    terms |= {"notional_usd": 250000.5, "limit_price_usd": 612}

    response = client_for(alem.users["manager"]).post(PROPOSALS, terms, format="json")

    assert response.status_code == 201
    assert response.json()["notional_usd"] == "250000.50"
    assert Proposal.objects.get().limit_price_usd == Decimal("612")


def test_full_approval_through_the_api_leaves_the_timeline_in_events(alem, terms):
    manager = client_for(alem.users["manager"])
    created = manager.post(PROPOSALS, terms | {"notional_usd": "2000000.00"}, format="json")
    proposal = Proposal.objects.get(pk=created.json()["id"])

    submitted = manager.post(url(proposal, "submit"))

    assert submitted.status_code == 200
    body = submitted.json()
    assert body["state"] == "in_review"
    assert body["current_stage"] == 1
    assert body["compliance"]["outcome"] in {"pass", "warn"}
    assert [(s["order"], s["name"], s["status"]) for s in body["stages"]] == [
        (1, "Risk review", "current"),
        (2, "Investment committee", "pending"),
        (3, "Ministry sign-off", "pending"),
    ]

    for username in ("risk", "committee1", "committee2", "ministry"):
        response = client_for(alem.users[username]).post(
            url(proposal, "decisions"), {"verdict": "approve", "comment": "ok"}, format="json"
        )
        assert response.status_code == 201, response.json()
        assert response.json()["user"] == username

    detail = manager.get(url(proposal)).json()
    assert detail["state"] == "approved"
    assert detail["current_stage"] is None
    assert detail["approval_expires_at"] is not None
    assert detail["stages"] == [
        {
            "order": 1,
            "name": "Risk review",
            "permission": "review_risk",
            "quorum": 1,
            "approvals": ["risk"],
            "status": "complete",
        },
        {
            "order": 2,
            "name": "Investment committee",
            "permission": "vote_committee",
            "quorum": 2,
            "approvals": ["committee1", "committee2"],
            "status": "complete",
        },
        {
            "order": 3,
            "name": "Ministry sign-off",
            "permission": "approve_ministry",
            "quorum": 1,
            "approvals": ["ministry"],
            "status": "complete",
        },
    ]
    events = client_for(alem.users["auditor"]).get(url(proposal, "events")).json()
    assert events["count"] == 9
    assert [(e["actor"], e["action"]) for e in events["results"]] == [
        ("manager", "proposal.created"),
        ("manager", "proposal.submitted"),
        ("risk", "decision.recorded"),
        ("risk", "proposal.stage_completed"),
        ("committee1", "decision.recorded"),
        ("committee2", "decision.recorded"),
        ("committee2", "proposal.stage_completed"),
        ("ministry", "decision.recorded"),
        ("ministry", "proposal.approved"),
    ]
    sequences = [e["sequence"] for e in events["results"]]
    assert sequences == sorted(sequences)
    assert events["results"][2]["payload"]["verdict"] == "approve"
    decisions = manager.get(url(proposal, "decisions")).json()
    assert [(d["user"], d["stage"], d["verdict"]) for d in decisions["results"]] == [
        ("risk", 1, "approve"),
        ("committee1", 2, "approve"),
        ("committee2", 2, "approve"),
        ("ministry", 3, "approve"),
    ]
    assert decisions["results"][0]["evidence"]["policy_version"] == 1


def test_author_edits_a_draft_with_patch(alem):
    proposal = alem.proposal()
    before = last_sequence()

    response = client_for(alem.users["manager"]).patch(
        url(proposal), {"notional_usd": "400000.00", "rationale": "Smaller."}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["notional_usd"] == "400000.00"
    assert response.json()["rationale"] == "Smaller."
    proposal.refresh_from_db()
    assert proposal.notional_usd == Decimal("400000.00")
    assert [action for action, _ in new_events(before)] == ["proposal.updated"]


def test_author_withdraws_with_a_reason(alem):
    proposal = alem.proposal(submit=True)
    before = last_sequence()

    response = client_for(alem.users["manager"]).post(
        url(proposal, "withdraw"), {"reason": "Market moved."}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["state"] == "withdrawn"
    assert response.json()["current_stage"] is None
    assert new_events(before) == [
        (
            "proposal.withdrawn",
            {"version": 1, "from_state": "in_review", "reason": "Market moved."},
        )
    ]


# ---------------------------------------------------------------------------------------------
# The error contract
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("get", None),
        ("post", None),
        ("get", ""),
        ("patch", ""),
        ("post", "submit"),
        ("post", "withdraw"),
        ("get", "decisions"),
        ("post", "decisions"),
        ("get", "events"),
    ],
)
def test_unauthenticated_requests_get_401_with_a_token_challenge(alem, terms, method, action):
    proposal = alem.proposal(submit=True)
    before = last_sequence()
    path = PROPOSALS if action is None else url(proposal, action)

    response = getattr(APIClient(), method)(path, terms | {"verdict": "approve"}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert Proposal.objects.count() == 1
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.IN_REVIEW
    assert Decision.objects.count() == 0
    assert new_events(before) == []


def test_an_invalid_token_gets_401(alem):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(PROPOSALS)

    assert response.status_code == 401


def test_non_author_submitting_gets_403_with_code(alem):
    proposal = alem.proposal()
    before = last_sequence()

    response = client_for(alem.users["manager2"]).post(url(proposal, "submit"))

    assert response.status_code == 403
    assert response.json()["code"] == "not_permitted"
    assert response.json()["detail"] == "Only the author may submit this proposal."
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.DRAFT
    assert new_events(before) == []


def test_creating_without_the_propose_role_gets_403(alem, terms):
    before = last_sequence()

    response = client_for(alem.users["risk"]).post(PROPOSALS, terms, format="json")

    assert response.status_code == 403
    assert response.json()["code"] == "not_permitted"
    assert Proposal.objects.count() == 0
    assert new_events(before) == []


def test_patch_while_in_review_gets_409_invalid_state(alem):
    proposal = alem.proposal(submit=True)
    before = last_sequence()

    response = client_for(alem.users["manager"]).patch(
        url(proposal), {"notional_usd": "1.00"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["code"] == "invalid_state"
    assert set(response.json()) == {"code", "detail"}
    proposal.refresh_from_db()
    assert proposal.notional_usd == Decimal("500000.00")
    assert proposal.state == ProposalState.IN_REVIEW
    assert proposal.version == 1
    assert new_events(before) == []


def test_submit_blocked_by_compliance_gets_409_and_stays_draft(alem):
    # Above the fund's single-proposal limit of USD 5M.
    proposal = alem.proposal(notional_usd=Decimal("6000000.00"))
    before = last_sequence()

    response = client_for(alem.users["manager"]).post(url(proposal, "submit"))

    assert response.status_code == 409
    assert response.json()["code"] == "compliance_blocked"
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.DRAFT
    assert proposal.submitted_at is None
    assert [action for action, _ in new_events(before)] == ["proposal.submit_refused"]


def test_patch_of_a_field_that_is_not_a_term_gets_400(alem):
    proposal = alem.proposal()
    before = last_sequence()

    response = client_for(alem.users["manager"]).patch(
        url(proposal), {"side": "buy"}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"side": ["This field cannot be edited."]}
    assert new_events(before) == []


# ---------------------------------------------------------------------------------------------
# Decisions refused
# ---------------------------------------------------------------------------------------------


def _assert_refused_and_nothing_else(proposal, before, *, decisions, code, state, stage, version):
    proposal.refresh_from_db()
    assert Decision.objects.filter(proposal=proposal).count() == decisions
    assert proposal.state == state
    assert proposal.current_stage.order == stage
    assert proposal.version == version
    events = new_events(before)
    assert [(action, payload["code"]) for action, payload in events] == [("decision.refused", code)]


def test_author_deciding_on_own_proposal_gets_409_segregation_of_duties(alem):
    proposal = alem.proposal(submit=True)
    before = last_sequence()

    response = client_for(alem.users["manager"]).post(
        url(proposal, "decisions"), {"verdict": "approve"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["code"] == "segregation_of_duties"
    _assert_refused_and_nothing_else(
        proposal,
        before,
        decisions=0,
        code="segregation_of_duties",
        state=ProposalState.IN_REVIEW,
        stage=1,
        version=1,
    )


def test_deciding_without_the_current_stage_role_gets_403(alem):
    proposal = alem.proposal(submit=True)
    before = last_sequence()

    response = client_for(alem.users["committee1"]).post(
        url(proposal, "decisions"), {"verdict": "approve"}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == "not_permitted"
    _assert_refused_and_nothing_else(
        proposal,
        before,
        decisions=0,
        code="not_permitted",
        state=ProposalState.IN_REVIEW,
        stage=1,
        version=1,
    )


def test_deciding_for_a_stage_that_is_not_current_gets_409_stage_not_current(alem):
    proposal = alem.proposal(submit=True)
    before = last_sequence()

    response = client_for(alem.users["risk"]).post(
        url(proposal, "decisions"), {"verdict": "approve", "stage": 2}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["code"] == "stage_not_current"
    _assert_refused_and_nothing_else(
        proposal,
        before,
        decisions=0,
        code="stage_not_current",
        state=ProposalState.IN_REVIEW,
        stage=1,
        version=1,
    )


def test_deciding_twice_gets_409_already_decided(alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    committee1 = client_for(alem.users["committee1"])
    first = committee1.post(url(proposal, "decisions"), {"verdict": "approve"}, format="json")
    assert first.status_code == 201
    before = last_sequence()

    response = committee1.post(url(proposal, "decisions"), {"verdict": "reject"}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "already_decided"
    _assert_refused_and_nothing_else(
        proposal,
        before,
        decisions=2,
        code="already_decided",
        state=ProposalState.IN_REVIEW,
        stage=2,
        version=1,
    )


def test_explicit_current_stage_is_accepted(alem):
    proposal = alem.proposal(submit=True)

    response = client_for(alem.users["risk"]).post(
        url(proposal, "decisions"),
        {"verdict": "request_changes", "comment": "Explain the sizing.", "stage": 1},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["stage"] == 1
    assert response.json()["stage_name"] == "Risk review"
    assert response.json()["comment"] == "Explain the sizing."
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.CHANGES_REQUESTED


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"verdict": "maybe"}, "verdict"),
        ({}, "verdict"),
        ({"verdict": "approve", "stage": "first"}, "stage"),
        ({"verdict": "approve", "stage": 0}, "stage"),
    ],
)
def test_malformed_decision_gets_400_and_records_nothing(alem, body, field):
    proposal = alem.proposal(submit=True)
    before = last_sequence()

    response = client_for(alem.users["risk"]).post(url(proposal, "decisions"), body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Decision.objects.count() == 0
    assert new_events(before) == []


# ---------------------------------------------------------------------------------------------
# Bad input on create: 400 with field errors and nothing stored
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"notional_usd": "-100.00"}, "notional_usd"),
        ({"notional_usd": "0"}, "notional_usd"),
        ({"notional_usd": "0.00"}, "notional_usd"),
        ({"notional_usd": "lots"}, "notional_usd"),
        ({"notional_usd": ""}, "notional_usd"),
        ({"notional_usd": "NaN"}, "notional_usd"),
        ({"notional_usd": "Infinity"}, "notional_usd"),
        ({"notional_usd": "1234567890123456789.00"}, "notional_usd"),  # 19 whole digits
        ({"notional_usd": "100.001"}, "notional_usd"),  # a tenth of a cent
        ({"notional_usd": 100.001}, "notional_usd"),  # the same as a JSON number
        ({"notional_usd": 1e30}, "notional_usd"),
        ({"limit_price_usd": "-1"}, "limit_price_usd"),
        ({"limit_price_usd": "0"}, "limit_price_usd"),
        ({"limit_price_usd": "600.00000000001"}, "limit_price_usd"),  # 11 decimals
        ({"limit_price_usd": "abc"}, "limit_price_usd"),
        ({"asset": "NOPE"}, "asset"),
        ({"asset": "bnb"}, "asset"),
        ({"fund": 999999}, "fund"),
        ({"fund": "alem"}, "fund"),
        ({"funding_source": 999999}, "funding_source"),
        ({"side": "sell"}, "side"),
        ({"rationale": ""}, "rationale"),
    ],
)
def test_bad_input_gets_400_with_field_errors_and_stores_nothing(alem, terms, changes, field):
    before = last_sequence()

    response = client_for(alem.users["manager"]).post(PROPOSALS, terms | changes, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Proposal.objects.count() == 0
    assert new_events(before) == []


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("fund", "This field is required."),
        ("rationale", "This field is required."),
        # The terms a buy needs are the service's to name (operations.TERMS).
        ("asset", "Required for a buy."),
        ("notional_usd", "Required for a buy."),
        ("limit_price_usd", "Required for a buy."),
        ("funding_source", "Required for a buy."),
    ],
)
def test_missing_field_gets_400_and_stores_nothing(alem, terms, missing, message):
    before = last_sequence()
    del terms[missing]

    response = client_for(alem.users["manager"]).post(PROPOSALS, terms, format="json")

    assert response.status_code == 400
    assert response.json() == {missing: [message]}
    assert Proposal.objects.count() == 0
    assert new_events(before) == []


def test_bad_amount_on_patch_gets_400_and_changes_nothing(alem):
    proposal = alem.proposal()
    before = last_sequence()

    response = client_for(alem.users["manager"]).patch(
        url(proposal), {"notional_usd": "-5.00"}, format="json"
    )

    assert response.status_code == 400
    assert list(response.json()) == ["notional_usd"]
    proposal.refresh_from_db()
    assert proposal.notional_usd == Decimal("500000.00")
    assert new_events(before) == []


# ---------------------------------------------------------------------------------------------
# Scoping: other funds' proposals do not exist for the caller
# ---------------------------------------------------------------------------------------------


def test_creating_in_a_fund_the_caller_cannot_see_reads_as_nonexistent(alem, other, terms):
    before = last_sequence()
    terms |= {"fund": other.fund.pk, "funding_source": other.funding_source.pk}

    response = client_for(alem.users["manager"]).post(PROPOSALS, terms, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "fund": [f'Invalid pk "{other.fund.pk}" - object does not exist.'],
        "funding_source": [f'Invalid pk "{other.funding_source.pk}" - object does not exist.'],
    }
    assert Proposal.objects.count() == 0
    assert new_events(before) == []


def test_funding_source_of_another_visible_fund_gets_400(alem, other, terms):
    # The manager also audits the other fund, so its funding source is visible to them.
    services.role_grant(user=alem.users["manager"], fund=other.fund, role="audit")
    before = last_sequence()

    response = client_for(alem.users["manager"]).post(
        PROPOSALS, terms | {"funding_source": other.funding_source.pk}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"funding_source": ["This funding source belongs to another fund."]}
    assert Proposal.objects.count() == 0
    assert new_events(before) == []


def test_list_shows_only_the_callers_funds_proposals(alem, other):
    own = [alem.proposal(), alem.proposal(author="manager2", submit=True)]
    other.proposal()

    response = client_for(alem.users["auditor"]).get(PROPOSALS)

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert {p["id"] for p in body["results"]} == {p.pk for p in own}
    assert {p["fund"] for p in body["results"]} == {alem.fund.pk}


@pytest.mark.parametrize(
    ("method", "action", "body"),
    [
        ("get", "", None),
        ("patch", "", {"rationale": "Hijacked."}),
        ("post", "submit", None),
        ("post", "withdraw", {"reason": "Nope."}),
        ("get", "decisions", None),
        ("post", "decisions", {"verdict": "approve"}),
        ("get", "events", None),
    ],
)
def test_other_funds_proposal_is_404_for_every_method(alem, other, method, action, body):
    proposal = other.proposal(submit=True)
    before = last_sequence()
    # alem's risk officer holds review_risk, just not on the other fund.
    client = client_for(alem.users["risk"])

    response = getattr(client, method)(url(proposal, action), body, format="json")

    assert response.status_code == 404
    assert "code" not in response.json()
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.IN_REVIEW
    assert proposal.rationale == "Build the strategic BNB position."
    assert Decision.objects.count() == 0
    assert new_events(before) == []


def test_superuser_without_roles_sees_no_proposals(alem):
    proposal = alem.proposal()
    admin = UserFactory(username="admin", is_superuser=True, is_staff=True)
    client = client_for(admin)

    listing = client.get(PROPOSALS)
    detail = client.get(url(proposal))

    assert listing.status_code == 200
    assert listing.json()["count"] == 0
    assert listing.json()["results"] == []
    assert detail.status_code == 404


def test_unknown_proposal_id_is_404(alem):
    client = client_for(alem.users["manager"])

    assert client.get(f"{PROPOSALS}424242/").status_code == 404
    assert client.get(f"{PROPOSALS}abc/").status_code == 404


# ---------------------------------------------------------------------------------------------
# Query counts
# ---------------------------------------------------------------------------------------------


def _proposals_with_decisions(builder: FundBuilder, count: int) -> None:
    for i in range(count):
        proposal = builder.proposal(notional_usd=Decimal("10000.00"), submit=i % 5 != 0)
        if proposal.state == ProposalState.IN_REVIEW:
            builder.decide(proposal, "risk")
            builder.decide(proposal, "committee1")


def _list_queries(client) -> tuple[int, dict]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(PROPOSALS)
    assert response.status_code == 200
    return len(queries), response.json()


def test_proposal_list_costs_the_same_queries_for_5_and_50_proposals(alem):
    client = client_for(alem.users["auditor"])
    _proposals_with_decisions(alem, 5)
    queries_for_5, body = _list_queries(client)
    assert body["count"] == 5

    _proposals_with_decisions(alem, 45)
    queries_for_50, body = _list_queries(client)

    assert body["count"] == 50
    assert len(body["results"]) == 50
    # 40 submitted, each approved by risk (stage 1) and by committee1 (stage 2); 10 drafts.
    approvals = [a for p in body["results"] for s in p["stages"] for a in s["approvals"]]
    assert len(approvals) == 80
    assert queries_for_50 == queries_for_5


def test_the_stages_field_matches_its_documented_serializer(alem):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    proposal = selectors.proposal_list_for_user(alem.users["risk"]).get(pk=proposal.pk)

    shown = ProposalSerializer(proposal).data["stages"]
    documented = StageStatusSerializer(selectors.proposal_stage_statuses(proposal), many=True).data

    assert shown == documented
    assert shown[0]["approvals"] == ["risk"]
