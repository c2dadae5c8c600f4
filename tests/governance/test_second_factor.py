"""Step-up: every decision and execution needs a fresh code from the actor's
enrolled TOTP device, and records which device confirmed it. Service level and API.

The rules of the workflow are checked before the code, so a refusal on a rule never consumes a
code; a refused code records nothing but the refusal's own audit event.
"""

from decimal import Decimal

import pytest
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import services
from governance.exceptions import (
    SecondFactorInvalid,
    SecondFactorRequired,
    SegregationOfDuties,
)
from governance.models import AuditEvent, Decision, Execution, ProposalState
from tests.api import client_for
from tests.factories import UserFactory, otp_code, otp_device

D = Decimal
S = ProposalState


def wrong_code(user) -> str:
    right = otp_code(user)
    return f"{(int(right) + 1) % 1_000_000:06d}"


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-sequence").first()


def decide(alem, proposal, username, otp_token, verdict="approve"):
    return services.decision_record(
        proposal_id=proposal.pk, user=alem.users[username], verdict=verdict, otp_token=otp_token
    )


def fill(alem, proposal, otp_token, ref="order-1"):
    return services.execution_record(
        proposal_id=proposal.pk,
        actor=alem.users["treasury"],
        quantity=D("1"),
        price_usd=D("600"),
        fee_usd=D("0"),
        venue="Binance",
        external_ref=ref,
        executed_at=timezone.now(),
        otp_token=otp_token,
    )


# ---------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------


def test_a_decision_records_the_device_that_confirmed_it(alem):
    proposal = alem.proposal(submit=True)
    device = otp_device(alem.users["risk"])

    decision = decide(alem, proposal, "risk", otp_code(alem.users["risk"]))

    assert decision.confirmed_by_device == device.persistent_id
    event = AuditEvent.objects.get(action="decision.recorded")
    assert event.payload["confirmed_by_device"] == device.persistent_id


@pytest.mark.parametrize("token", ["", "   ", None, "12345", "abcdef"])
def test_a_decision_without_a_valid_code_is_refused_and_records_nothing(alem, token):
    proposal = alem.proposal(submit=True)
    otp_device(alem.users["risk"])

    with pytest.raises(SecondFactorInvalid):
        decide(alem, proposal, "risk", token)

    assert Decision.objects.count() == 0
    proposal.refresh_from_db()
    assert (proposal.state, proposal.current_stage.order) == (S.IN_REVIEW, 1)
    event = last_event()
    assert (event.action, event.payload["code"]) == ("decision.refused", "second_factor_invalid")


def test_a_wrong_code_is_refused(alem):
    proposal = alem.proposal(submit=True)

    with pytest.raises(SecondFactorInvalid):
        decide(alem, proposal, "risk", wrong_code(alem.users["risk"]))

    assert Decision.objects.count() == 0


def test_a_decider_without_an_enrolled_device_is_refused(alem):
    proposal = alem.proposal(submit=True)
    assert not TOTPDevice.objects.filter(user=alem.users["risk"]).exists()

    with pytest.raises(SecondFactorRequired):
        decide(alem, proposal, "risk", "123456")

    assert Decision.objects.count() == 0
    assert last_event().payload["code"] == "second_factor_required"


def test_an_unconfirmed_device_does_not_count(alem):
    proposal = alem.proposal(submit=True)
    user = alem.users["risk"]
    device = TOTPDevice.objects.create(user=user, name="Half enrolled", confirmed=False)
    code = f"{TOTP(device.bin_key).token():06d}"

    with pytest.raises(SecondFactorRequired):
        decide(alem, proposal, "risk", code)


def test_a_code_is_good_once(alem):
    first, second = alem.proposal(submit=True), alem.proposal(submit=True)
    code = otp_code(alem.users["risk"])
    decide(alem, first, "risk", code)

    with pytest.raises(SecondFactorInvalid):
        decide(alem, second, "risk", code)

    assert Decision.objects.filter(proposal=second).count() == 0


def test_wrong_codes_throttle_the_device_so_guessing_stops(alem, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 600  # the next try waits minutes, not a second
    proposal = alem.proposal(submit=True)
    user = alem.users["risk"]
    right = otp_code(user)
    with pytest.raises(SecondFactorInvalid):
        decide(alem, proposal, "risk", f"{(int(right) + 1) % 1_000_000:06d}")

    with pytest.raises(SecondFactorInvalid):
        decide(alem, proposal, "risk", right)

    assert Decision.objects.count() == 0
    assert TOTPDevice.objects.get(user=user).throttling_failure_count >= 1


def test_rules_are_checked_before_the_code_so_the_author_learns_the_rule(alem):
    proposal = alem.proposal(submit=True)

    with pytest.raises(SegregationOfDuties):
        decide(alem, proposal, "manager", "")


# ---------------------------------------------------------------------------------------------
# Executions
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def approved(alem):
    proposal = alem.approve_fully(alem.proposal(submit=True))
    assert proposal.state == S.APPROVED
    return proposal


def test_a_fill_records_the_device_that_confirmed_it(alem, approved):
    device = otp_device(alem.users["treasury"])

    execution, created = fill(alem, approved, otp_code(alem.users["treasury"]))

    assert created and execution.confirmed_by_device == device.persistent_id


def test_a_fill_with_a_wrong_code_books_nothing(alem, approved):
    with pytest.raises(SecondFactorInvalid):
        fill(alem, approved, wrong_code(alem.users["treasury"]))

    assert Execution.objects.count() == 0
    assert (last_event().action, last_event().payload["code"]) == (
        "execution.refused",
        "second_factor_invalid",
    )


def test_a_treasury_operator_without_a_device_cannot_fill(alem, approved):
    with pytest.raises(SecondFactorRequired):
        fill(alem, approved, "123456")

    assert Execution.objects.count() == 0


def test_reporting_a_booked_fill_again_needs_no_new_code(alem, approved):
    booked, _ = fill(alem, approved, otp_code(alem.users["treasury"]))

    again, created = fill(alem, approved, "")

    assert (again.pk, created) == (booked.pk, False)


# ---------------------------------------------------------------------------------------------
# API: the code travels as ``otp_token`` in the body
# ---------------------------------------------------------------------------------------------


def decisions_url(proposal) -> str:
    return f"/api/v1/proposals/{proposal.pk}/decisions/"


def test_api_decision_with_its_code_is_created_with_the_device(alem):
    proposal = alem.proposal(submit=True)
    risk = alem.users["risk"]

    response = client_for(risk).post(
        decisions_url(proposal), {"verdict": "approve", "otp_token": otp_code(risk)}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["confirmed_by_device"] == otp_device(risk).persistent_id
    assert "otp_token" not in response.json()


@pytest.mark.parametrize(
    ("enrolled", "code"), [(True, "second_factor_invalid"), (False, "second_factor_required")]
)
def test_api_decision_without_a_code_gets_403_and_records_nothing(alem, enrolled, code):
    proposal = alem.proposal(submit=True)
    if enrolled:
        otp_device(alem.users["risk"])

    response = client_for(alem.users["risk"]).post(
        decisions_url(proposal), {"verdict": "approve", "otp_token": ""}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == code
    assert Decision.objects.count() == 0


def test_api_fill_with_a_wrong_code_gets_403_and_books_nothing(alem, approved):
    treasury = alem.users["treasury"]
    body = {
        "quantity": "1",
        "price_usd": "600",
        "venue": "Binance",
        "external_ref": "order-9",
        "executed_at": timezone.now().isoformat(),
        "otp_token": wrong_code(treasury),
    }

    response = client_for(treasury).post(
        f"/api/v1/proposals/{approved.pk}/executions/", body, format="json"
    )

    assert response.status_code == 403
    assert response.json()["code"] == "second_factor_invalid"
    assert Execution.objects.count() == 0


def test_a_user_without_any_role_gets_no_free_pass(alem):
    stranger = UserFactory()
    proposal = alem.proposal(submit=True)

    response = client_for(stranger).post(
        decisions_url(proposal), {"verdict": "approve"}, format="json"
    )

    assert response.status_code == 404
