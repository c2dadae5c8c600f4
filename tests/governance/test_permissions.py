"""The permission predicates, and the SQL filters beside them that must agree with them.

``governance.permissions`` answers each "may this person act now?" once: the services raise what
a predicate returns and the pages show it. The queue, the daily digest and the stage e-mails
filter in SQL instead; here both run on the same fund, with people of every role (some holding
two) and proposals in every state, and must give the same answer for every pair.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from governance import permissions, selectors, services
from governance.exceptions import (
    AlreadyDecided,
    InvalidTransition,
    NotPermitted,
    SegregationOfDuties,
)
from governance.models import Proposal, ProposalState
from portfolio.models import FundRole as R
from tests.factories import FundBuilder, UserFactory

D = Decimal


@pytest.fixture
def world(alem):
    """Alem's fund with proposals at every point of the workflow, a few people holding two
    roles, a deactivated decider, and a second fund whose people hold nothing in Alem's."""
    for name, roles in {
        "risk_treasury": (R.REVIEW_RISK, R.EXECUTE_TRADES),
        "committee_treasury": (R.VOTE_COMMITTEE, R.EXECUTE_TRADES),
        "gone": (R.VOTE_COMMITTEE,),
    }.items():
        user = UserFactory(username=name)
        for role in roles:
            services.role_grant(user=user, fund=alem.fund, role=role)
        alem.users[name] = user

    def submitted(**terms):
        return alem.proposal(submit=True, **terms)

    proposals = {"draft": alem.proposal()}
    proposals["at_risk"] = submitted()
    proposals["by_manager2"] = alem.proposal(author="manager2", submit=True)

    at_committee = submitted()
    alem.decide(at_committee, "risk_treasury")
    alem.decide(at_committee, "committee1")
    proposals["at_committee"] = at_committee

    at_ministry = submitted(notional_usd=D("1500000.00"))
    for name in ("risk", "committee_treasury", "committee2"):
        alem.decide(at_ministry, name)
    proposals["at_ministry"] = at_ministry

    changes = submitted()
    alem.decide(changes, "risk", verdict="request_changes")
    proposals["changes_requested"] = changes

    resubmitted = submitted()
    alem.decide(resubmitted, "risk", verdict="request_changes")
    services.proposal_submit(proposal_id=resubmitted.pk, actor=alem.users["manager"])
    proposals["resubmitted"] = resubmitted  # version 2: the risk officer decides again

    rejected = submitted()
    alem.decide(rejected, "risk", verdict="reject")
    proposals["rejected"] = rejected

    approved = submitted()
    for name in ("risk_treasury", "committee1", "committee_treasury"):
        alem.decide(approved, name)
    proposals["approved"] = approved

    proposals["approved_plainly"] = alem.approve_fully(submitted())
    expired = alem.approve_fully(submitted())
    Proposal.objects.filter(pk=expired.pk).update(
        approval_expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    proposals["past_expiry"] = expired

    alem.users["gone"].is_active = False
    alem.users["gone"].save(update_fields=["is_active"])
    other = FundBuilder.alem_like(prefix="other_")
    proposals["other_fund"] = other.proposal(submit=True)

    people = [*alem.users.values(), *other.users.values()]
    return people, {
        key: Proposal.objects.prefetch_related("decisions").get(pk=p.pk)
        for key, p in proposals.items()
    }


def test_the_queue_and_the_stage_emails_offer_exactly_the_decisions_the_services_accept(world):
    people, proposals = world
    for user in people:
        queued = {item.proposal.pk for item in selectors.decisions_awaiting(user)}
        for key, proposal in proposals.items():
            allowed = permissions.decide_refusal(user, proposal) is None
            emailed = permissions.stage_deciders(proposal).filter(pk=user.pk).exists()

            assert (proposal.pk in queued) == allowed, (user.username, key)
            assert emailed == allowed, (user.username, key)


def test_the_fills_queue_offers_exactly_the_fills_the_services_accept(world):
    people, proposals = world
    for user in people:
        queued = {proposal.pk for proposal in selectors.fills_awaiting(user)}
        for key, proposal in proposals.items():
            allowed = permissions.fill_refusal(user, proposal) is None

            assert (proposal.pk in queued) == allowed, (user.username, key)


def test_the_world_covers_both_answers_of_each_filter(world):
    """So that the agreement above is not vacuous."""
    people, proposals = world
    deciders = {
        (user.username, key)
        for user in people
        for key, proposal in proposals.items()
        if permissions.decide_refusal(user, proposal) is None
    }
    fillers = {
        (user.username, key)
        for user in people
        for key, proposal in proposals.items()
        if permissions.fill_refusal(user, proposal) is None
    }

    assert ("risk", "resubmitted") in deciders  # a new version: they decide again
    assert ("committee2", "at_committee") in deciders
    assert ("committee1", "at_committee") not in deciders  # decided already
    assert ("gone", "at_committee") not in deciders  # deactivated
    assert ("ministry", "at_ministry") in deciders
    assert fillers == {
        ("treasury", "approved"),
        ("treasury", "approved_plainly"),
        ("risk_treasury", "approved_plainly"),
        ("committee_treasury", "approved_plainly"),
    }


def test_each_refusal_names_the_rule(world):
    people, proposals = world
    users = {user.username: user for user in people}

    def decide(name, key):
        return permissions.decide_refusal(users[name], proposals[key])

    assert isinstance(decide("manager", "at_risk"), SegregationOfDuties)
    assert isinstance(decide("risk", "draft"), InvalidTransition)
    assert isinstance(decide("committee1", "at_risk"), NotPermitted)
    assert isinstance(decide("committee1", "at_committee"), AlreadyDecided)
    # At the committee stage, the risk officer who approved at stage 1 lacks the role (403 in the
    # API) and the page says why they are done: they decided on this version.
    refusal = decide("risk_treasury", "at_committee")
    assert (type(refusal), refusal.reason) == (NotPermitted, "already_decided")

    fill = permissions.fill_refusal(users["risk_treasury"], proposals["approved"])
    assert (type(fill), fill.code, fill.reason) == (
        SegregationOfDuties,
        "segregation_of_duties",
        "approved_by_you",
    )
    expired = permissions.fill_refusal(users["treasury"], proposals["past_expiry"])
    assert expired.code == "approval_expired"


def test_authors_edit_submit_and_withdraw_only_while_the_state_allows(world):
    people, proposals = world
    users = {user.username: user for user in people}
    manager = users["manager"]

    def allowed(predicate, key, user=manager):
        return predicate(user, proposals[key]) is None

    assert allowed(permissions.edit_refusal, "draft")
    assert allowed(permissions.edit_refusal, "changes_requested")
    assert not allowed(permissions.edit_refusal, "at_risk")
    assert not allowed(permissions.edit_refusal, "draft", users["manager2"])
    assert allowed(permissions.submit_refusal, "changes_requested")
    assert not allowed(permissions.submit_refusal, "approved")
    assert allowed(permissions.withdraw_refusal, "approved")
    assert not allowed(permissions.withdraw_refusal, "rejected")

    services.role_revoke(actor=None, user=manager, fund=proposals["draft"].fund, role=R.PROPOSE)
    assert isinstance(permissions.edit_refusal(manager, proposals["draft"]), NotPermitted)


def test_remaining_notional_is_the_same_in_python_and_in_sql(alem):
    proposal = alem.approve_fully(alem.proposal(submit=True))
    Proposal.objects.filter(pk=proposal.pk).update(executed_notional_usd=D("123456.78"))
    proposal.refresh_from_db()
    approved = Proposal.objects.filter(fund=alem.fund, state=ProposalState.APPROVED)

    assert proposal.remaining_usd == D("376543.22")
    assert approved.remaining_usd_total() == proposal.remaining_usd
    assert Proposal.objects.none().remaining_usd_total() == 0
