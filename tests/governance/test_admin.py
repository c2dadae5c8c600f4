"""The back office (Django admin) for governance: read-only records, service-routed writes."""

from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from governance import services
from governance.api_tokens import api_token_issue
from governance.audit import audit_verification_run
from governance.checkpoints import checkpoint_sign
from governance.models import (
    AdminChange,
    ApprovalPolicy,
    AuditEvent,
    CheckpointAnchor,
    CustodyAccountChange,
    Decision,
    Execution,
    Proposal,
    ProposalState,
)
from governance.policies import StageSpec
from governance.preferences import language_preference_set
from governance.roles import has_role
from portfolio.models import CustodyAccount, Fund, FundRole, LedgerEntry
from tests.factories import UserFactory, otp_code, otp_device
from tests.tampering import superuser_sql
from tests.web import signed_in

R = FundRole


@pytest.fixture
def site_admin(db):
    return UserFactory(username="siteadmin", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_web(client, site_admin):
    return signed_in(client, site_admin)


@pytest.fixture
def staff_web(db):
    """A staff member who is not a superuser but may view funds in the back office."""
    from django.contrib.auth.models import Permission

    staff = UserFactory(username="clerk", is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(codename="view_fund"),
        Permission.objects.get(codename="change_fund"),
    )
    return signed_in(Client(), staff)


def url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-sequence").first()


GOVERNANCE_MODELS = sorted(
    (m for m in admin.site._registry if m._meta.app_label == "governance"),
    key=lambda m: m._meta.model_name,
)


# ---------------------------------------------------------------------------------------------
# Every page opens
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", GOVERNANCE_MODELS, ids=lambda m: m._meta.model_name)
def test_every_governance_changelist_and_object_page_opens_for_a_superuser(
    alem, admin_web, site_admin, model
):
    services.admin_change_request(
        actor=site_admin, kind="staff_grant", user=alem.users["auditor"], reason="Audit support"
    )
    services.custody_change_request(
        actor=alem.users["fundadmin"],
        fund=alem.fund,
        action="add",
        name="Exchange sub-account",
        kind="exchange",
        chain="Bitcoin",
        account_reference="SUB-1",
        reason="Trading account",
    )
    proposal = alem.approve_fully(alem.proposal(submit=True))
    checkpoint = checkpoint_sign()  # before the fill written directly below, no event records it
    CheckpointAnchor.objects.create(
        checkpoint=checkpoint,
        state=CheckpointAnchor.State.CONFIRMED,
        tx_hash="0x" + "ab" * 32,
        block_number=1,
        attempts=1,
        next_attempt_at=timezone.now(),
        sent_at=timezone.now(),
        confirmed_at=timezone.now(),
    )
    # A fill as the execution service books it; written directly, only to have a row to show.
    Execution.objects.create(
        proposal=proposal,
        quantity=Decimal("100"),
        price_usd=Decimal("600"),
        fee_usd=Decimal("6"),
        cost_usd=Decimal("60006"),
        venue="Binance",
        external_ref="order-1",
        executed_at=timezone.now(),
        recorded_by=alem.users["treasury"],
        confirmed_by_device=otp_device(alem.users["treasury"]).persistent_id,
    )
    language_preference_set(user=alem.users["risk"], language="kk")
    api_token_issue(user=alem.users["risk"], name="Laptop")
    audit_verification_run(requested_by=alem.users["auditor"])
    info = model._meta.app_label, model._meta.model_name
    obj = model._default_manager.order_by("pk").first()
    assert obj is not None, f"the fixture has no {model.__name__} to open"

    changelist = admin_web.get(url("{}_{}_changelist".format(*info)))
    change = admin_web.get(url("{}_{}_change".format(*info), obj.pk))

    assert changelist.status_code == 200
    assert change.status_code == 200


def test_governance_admin_registers_every_governance_model():
    from django.apps import apps

    registered = {m for m in admin.site._registry if m._meta.app_label == "governance"}

    assert registered == set(apps.get_app_config("governance").get_models())


# ---------------------------------------------------------------------------------------------
# The audit log is read-only for everyone
# ---------------------------------------------------------------------------------------------


def test_superuser_cannot_add_audit_events(alem, admin_web):
    before = AuditEvent.objects.count()

    get = admin_web.get(url("governance_auditevent_add"))
    post = admin_web.post(url("governance_auditevent_add"), {"action": "forged", "sequence": 999})

    assert get.status_code == 403
    assert post.status_code == 403
    assert AuditEvent.objects.count() == before


def test_superuser_cannot_change_an_audit_event(alem, admin_web):
    event = AuditEvent.objects.get(action="role.granted", payload__user="risk")
    original = (event.action, event.payload, event.hash, event.actor_id)

    response = admin_web.post(
        url("governance_auditevent_change", event.pk),
        {"action": "role.revoked", "payload": '{"user": "nobody"}', "sequence": event.sequence},
    )

    event.refresh_from_db()
    assert response.status_code == 403
    assert (event.action, event.payload, event.hash, event.actor_id) == original


def test_superuser_cannot_delete_an_audit_event(alem, admin_web):
    event = last_event()
    before = AuditEvent.objects.count()

    get = admin_web.get(url("governance_auditevent_delete", event.pk))
    post = admin_web.post(url("governance_auditevent_delete", event.pk), {"post": "yes"})

    assert get.status_code == 403
    assert post.status_code == 403
    assert AuditEvent.objects.count() == before
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_audit_changelist_offers_no_bulk_delete(alem, admin_web):
    events = list(AuditEvent.objects.values_list("pk", flat=True))

    response = admin_web.post(
        url("governance_auditevent_changelist"),
        {"action": "delete_selected", "_selected_action": events, "index": 0, "post": "yes"},
    )

    assert response.status_code == 200
    assert AuditEvent.objects.count() == len(events)
    model_admin = admin.site._registry[AuditEvent]
    assert model_admin.get_actions(response.wsgi_request) == {}


def test_superuser_cannot_change_the_audit_chain_head(alem, admin_web):
    from governance.models import AuditChain

    chain = AuditChain.objects.get()
    before = (chain.length, chain.head_hash)

    response = admin_web.post(
        url("governance_auditchain_change", chain.pk), {"length": 1, "head_hash": "0" * 64}
    )

    chain.refresh_from_db()
    assert response.status_code == 403
    assert (chain.length, chain.head_hash) == before


def test_audit_changelist_shows_the_chain_head(alem, admin_web):
    from governance.models import AuditChain

    chain = AuditChain.objects.get()

    response = admin_web.get(url("governance_auditevent_changelist"))

    assert f"Chain head: {chain.length} events" in response.content.decode()


def test_audit_changelist_searches_payload_text(alem, admin_web):
    response = admin_web.get(url("governance_auditevent_changelist"), {"q": "committee2"})

    shown = list(response.context["cl"].result_list)
    assert [e.payload["user"] for e in shown] == ["committee2"]


def test_verify_page_reports_an_intact_chain(alem, admin_web):
    length = AuditEvent.objects.count()

    response = admin_web.get(url("governance_auditevent_verify"))

    assert response.status_code == 200
    assert response.context["result"].ok is True
    assert f"The audit chain is intact: {length} events verified." in response.content.decode()


def test_verify_page_names_the_first_altered_event(alem, admin_web):
    tampered = AuditEvent.objects.get(sequence=3)
    with superuser_sql():
        AuditEvent.objects.filter(pk=tampered.pk).update(payload={"forged": True})

    response = admin_web.get(url("governance_auditevent_verify"))

    assert response.context["result"].ok is False
    assert response.context["result"].first_bad_sequence == 3
    assert "The audit chain is broken at event 3" in response.content.decode()


# ---------------------------------------------------------------------------------------------
# Proposals and decisions cannot be edited
# ---------------------------------------------------------------------------------------------


def test_proposal_cannot_be_moved_by_posting_to_its_admin_page(alem, admin_web):
    proposal = alem.proposal(submit=True)
    events_before = AuditEvent.objects.count()

    response = admin_web.post(
        url("governance_proposal_change", proposal.pk),
        {"state": "approved", "version": 7, "notional_usd": "1.00", "current_stage": ""},
    )

    proposal.refresh_from_db()
    assert response.status_code == 403
    assert proposal.state == ProposalState.IN_REVIEW
    assert proposal.version == 1
    assert proposal.notional_usd == Decimal("500000.00")
    assert AuditEvent.objects.count() == events_before


def test_proposals_cannot_be_added_or_deleted_in_admin(alem, admin_web):
    proposal = alem.proposal()

    add = admin_web.post(url("governance_proposal_add"), {"rationale": "forged"})
    delete = admin_web.post(url("governance_proposal_delete", proposal.pk), {"post": "yes"})

    assert add.status_code == 403
    assert delete.status_code == 403
    assert list(Proposal.objects.values_list("pk", flat=True)) == [proposal.pk]


def test_proposal_page_shows_compliance_stages_decisions_and_timeline(alem, admin_web):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk", comment="Within the risk budget.")

    response = admin_web.get(url("governance_proposal_change", proposal.pk))

    html = response.content.decode()
    assert response.status_code == 200
    assert "BNB is on the fund&#x27;s whitelist." in html
    assert "<td>1</td><td>Risk review</td><td>review_risk</td><td>1</td><td>risk</td>" in html
    assert "<td>Investment committee</td><td>vote_committee</td><td>2</td><td>-</td>" in html
    assert "Within the risk budget." in html
    assert "proposal.stage_completed" in html
    assert 'name="_save"' not in html


def test_decision_cannot_be_changed_or_deleted_in_admin(alem, admin_web):
    proposal = alem.proposal(submit=True)
    decision = alem.decide(proposal, "risk")

    change = admin_web.post(url("governance_decision_change", decision.pk), {"verdict": "reject"})
    delete = admin_web.post(url("governance_decision_delete", decision.pk), {"post": "yes"})

    decision.refresh_from_db()
    assert change.status_code == 403
    assert delete.status_code == 403
    assert decision.verdict == Decision.Verdict.APPROVE


def test_decision_page_names_the_device_that_confirmed_it(alem, admin_web):
    proposal = alem.proposal(submit=True)
    decision = alem.decide(proposal, "risk")

    page = admin_web.get(url("governance_decision_change", decision.pk))

    assert page.status_code == 200
    assert decision.confirmed_by_device in page.content.decode()


def _changelist_queries(web, name: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = web.get(url(name))
    assert response.status_code == 200
    return len(ctx.captured_queries)


def _proposals_with_decisions(alem, count: int) -> None:
    for _ in range(count):
        proposal = alem.proposal(submit=True, notional_usd=Decimal("100000.00"))
        alem.decide(proposal, "risk")
        alem.decide(proposal, "committee1")


@pytest.mark.parametrize(
    "changelist",
    [
        "governance_proposal_changelist",
        "governance_decision_changelist",
        "governance_auditevent_changelist",
    ],
)
def test_changelist_queries_do_not_grow_with_proposals(alem, admin_web, changelist):
    _proposals_with_decisions(alem, 5)
    admin_web.get(url(changelist))  # warm caches (content types, sessions)
    with_five = _changelist_queries(admin_web, changelist)

    _proposals_with_decisions(alem, 45)
    with_fifty = _changelist_queries(admin_web, changelist)

    assert Proposal.objects.count() == 50
    assert Decision.objects.count() == 100
    assert with_fifty == with_five


def test_proposal_changelist_shows_each_stage_with_its_progress(alem, admin_web):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    alem.decide(proposal, "committee1")

    response = admin_web.get(url("governance_proposal_changelist"))

    html = response.content.decode()
    assert "1. Risk review: complete (1/1)<br>2. Investment committee: current (1/2)" in html


# ---------------------------------------------------------------------------------------------
# Roles per fund
# ---------------------------------------------------------------------------------------------


def test_fund_page_links_to_its_roles_for_a_superuser(alem, admin_web):
    response = admin_web.get(url("portfolio_fund_change", alem.fund.pk))

    assert url("portfolio_fund_roles", alem.fund.pk) in response.content.decode()


def test_roles_page_lists_each_role_with_its_holders(alem, admin_web):
    response = admin_web.get(url("portfolio_fund_roles", alem.fund.pk))

    roles = {
        role["code"]: [h["user"].username for h in role["holders"]]
        for role in response.context["roles"]
    }
    assert response.status_code == 200
    assert roles["vote_committee"] == ["committee1", "committee2", "committee3"]
    assert roles["manage_policy"] == ["fundadmin", "fundadmin2"]
    assert roles["propose"] == ["manager", "manager2"]


def test_a_superuser_granting_a_role_only_requests_it(alem, admin_web, site_admin):
    newcomer = UserFactory(username="newcomer")

    response = admin_web.post(
        url("portfolio_fund_roles", alem.fund.pk),
        {"action": "grant", "user": newcomer.pk, "role": R.REVIEW_RISK, "reason": "New officer"},
        follow=True,
    )

    event = last_event()
    [change] = AdminChange.objects.all()
    assert not has_role(newcomer, alem.fund, R.REVIEW_RISK)
    assert (change.kind, change.user, change.role, change.state) == (
        "role_grant",
        newcomer,
        "review_risk",
        "pending",
    )
    assert (event.action, event.actor_id, event.fund_id) == (
        "admin_change.requested",
        site_admin.pk,
        alem.fund.pk,
    )
    assert messages_of(response) == [
        f"Requested: review_risk on {alem.fund} for newcomer. Another site administrator must "
        "confirm it under Admin changes."
    ]
    assert "newcomer" in response.content.decode()  # listed as waiting


def test_superuser_revokes_a_role_through_the_service(alem, admin_web, site_admin):
    risk = alem.users["risk"]

    response = admin_web.post(
        url("portfolio_fund_roles", alem.fund.pk),
        {"action": "revoke", "user": risk.pk, "role": R.REVIEW_RISK},
        follow=True,
    )

    event = last_event()
    assert not has_role(risk, alem.fund, R.REVIEW_RISK)
    assert (event.action, event.actor_id) == ("role.revoked", site_admin.pk)
    assert event.payload == {
        "user": "risk",
        "user_id": risk.pk,
        "role": "review_risk",
        "changes": {"roles": {"old": ["review_risk"], "new": []}},
    }
    assert messages_of(response) == [f"risk no longer holds review_risk on {alem.fund}."]


def test_granting_a_role_already_held_changes_nothing(alem, admin_web):
    before = AuditEvent.objects.count()

    response = admin_web.post(
        url("portfolio_fund_roles", alem.fund.pk),
        {"action": "grant", "user": alem.users["risk"].pk, "role": R.REVIEW_RISK, "reason": "x"},
        follow=True,
    )

    assert AuditEvent.objects.count() == before
    assert not AdminChange.objects.exists()
    assert messages_of(response) == [f"risk already holds review_risk on {alem.fund}."]


def test_unknown_role_is_refused_without_a_change(alem, admin_web):
    newcomer = UserFactory(username="newcomer")
    before = AuditEvent.objects.count()

    response = admin_web.post(
        url("portfolio_fund_roles", alem.fund.pk),
        {"action": "grant", "user": newcomer.pk, "role": "superpower"},
    )

    assert response.status_code == 200
    assert "role" in response.context["form"].errors
    assert AuditEvent.objects.count() == before


def test_roles_page_refuses_non_superuser_staff(alem, staff_web):
    newcomer = UserFactory(username="newcomer")
    before = AuditEvent.objects.count()
    roles_url = url("portfolio_fund_roles", alem.fund.pk)

    get = staff_web.get(roles_url)
    grant = staff_web.post(roles_url, {"action": "grant", "user": newcomer.pk, "role": R.AUDIT})
    revoke = staff_web.post(
        roles_url, {"action": "revoke", "user": alem.users["risk"].pk, "role": R.REVIEW_RISK}
    )

    assert (get.status_code, grant.status_code, revoke.status_code) == (403, 403, 403)
    assert not has_role(newcomer, alem.fund, R.AUDIT)
    assert has_role(alem.users["risk"], alem.fund, R.REVIEW_RISK)
    assert AuditEvent.objects.count() == before


def test_fund_page_shows_no_roles_link_to_non_superuser_staff(alem, staff_web):
    response = staff_web.get(url("portfolio_fund_change", alem.fund.pk))

    assert response.status_code == 200
    assert url("portfolio_fund_roles", alem.fund.pk) not in response.content.decode()


def test_role_grant_without_csrf_token_is_refused(alem, site_admin):
    web = signed_in(Client(enforce_csrf_checks=True), site_admin)
    newcomer = UserFactory(username="newcomer")
    before = AuditEvent.objects.count()

    response = web.post(
        url("portfolio_fund_roles", alem.fund.pk),
        {"action": "grant", "user": newcomer.pk, "role": R.AUDIT},
    )

    assert response.status_code == 403
    assert not has_role(newcomer, alem.fund, R.AUDIT)
    assert AuditEvent.objects.count() == before


def test_roles_page_get_changes_nothing_whatever_its_query(alem, admin_web):
    newcomer = UserFactory(username="newcomer")
    before = AuditEvent.objects.count()

    response = admin_web.get(
        url("portfolio_fund_roles", alem.fund.pk),
        {"action": "grant", "user": newcomer.pk, "role": R.AUDIT},
    )

    assert response.status_code == 200
    assert not has_role(newcomer, alem.fund, R.AUDIT)
    assert AuditEvent.objects.count() == before


# ---------------------------------------------------------------------------------------------
# Approval policies: drafted and published through the services, never edited
# ---------------------------------------------------------------------------------------------


def _draft_post(fund, *, note="Raise the ministry threshold") -> dict:
    stages = [
        ("1", "Risk review", "review_risk", "1", "0"),
        ("2", "Investment committee", "vote_committee", "2", "0"),
        ("3", "Ministry sign-off", "approve_ministry", "1", "2000000.00"),
    ]
    data = {
        "fund": fund.pk,
        "note": note,
        "stages-TOTAL_FORMS": "4",
        "stages-INITIAL_FORMS": "0",
        "stages-MIN_NUM_FORMS": "1",
        "stages-MAX_NUM_FORMS": "20",
    }
    for i, (order, name, permission, quorum, applies_from) in enumerate(stages):
        data |= {
            f"stages-{i}-order": order,
            f"stages-{i}-name": name,
            f"stages-{i}-permission": permission,
            f"stages-{i}-quorum": quorum,
            f"stages-{i}-applies_from_usd": applies_from,
        }
    # The fourth row is left blank, as the page shows it.
    data |= {"stages-3-quorum": "1", "stages-3-applies_from_usd": "0"}
    return data


def test_policy_draft_page_drafts_the_next_version_through_the_service(alem, admin_web, site_admin):
    services.role_grant(user=site_admin, fund=alem.fund, role=R.MANAGE_POLICY)

    response = admin_web.post(url("governance_approvalpolicy_add"), _draft_post(alem.fund))

    policy = ApprovalPolicy.objects.get(fund=alem.fund, version=2)
    assert response.status_code == 302
    assert response.url == url("governance_approvalpolicy_change", policy.pk)
    assert policy.drafted_by == site_admin
    assert policy.published_at is None
    assert policy.note == "Raise the ministry threshold"
    assert [
        (s.order, s.name, s.permission, s.quorum, s.applies_from_usd) for s in policy.stages.all()
    ] == [
        (1, "Risk review", "review_risk", 1, Decimal("0.00")),
        (2, "Investment committee", "vote_committee", 2, Decimal("0.00")),
        (3, "Ministry sign-off", "approve_ministry", 1, Decimal("2000000.00")),
    ]
    event = last_event()
    assert (event.action, event.actor_id, event.payload["version"]) == (
        "policy.drafted",
        site_admin.pk,
        2,
    )


def test_policy_draft_page_refuses_without_manage_policy_and_stores_nothing(alem, admin_web):
    before = (ApprovalPolicy.objects.count(), AuditEvent.objects.count())

    response = admin_web.post(url("governance_approvalpolicy_add"), _draft_post(alem.fund))

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "Drafting a policy needs the manage_policy role on the fund."
    ]
    assert (ApprovalPolicy.objects.count(), AuditEvent.objects.count()) == before


def test_policy_draft_page_refuses_stages_the_service_rejects(alem, admin_web, site_admin):
    services.role_grant(user=site_admin, fund=alem.fund, role=R.MANAGE_POLICY)
    data = _draft_post(alem.fund) | {
        "stages-0-applies_from_usd": "10",
        "stages-1-applies_from_usd": "10",
    }
    before = ApprovalPolicy.objects.count()

    response = admin_web.post(url("governance_approvalpolicy_add"), data)

    assert response.status_code == 200
    assert (
        "Every kind of operation needs a stage applying from USD 0"
        in response.context["form"].non_field_errors()[0]
    )
    assert ApprovalPolicy.objects.count() == before


def test_policy_draft_page_starts_from_the_stages_in_force(alem, admin_web):
    response = admin_web.get(url("governance_approvalpolicy_add"), {"fund": alem.fund.pk})

    initial = [form.initial for form in response.context["stages"].initial_forms]
    assert response.status_code == 200
    assert [(i["order"], i["name"], i["quorum"]) for i in initial] == [
        (1, "Risk review", 1),
        (2, "Investment committee", 2),
        (3, "Ministry sign-off", 1),
    ]


def _publish(web, policy):
    return web.post(
        url("governance_approvalpolicy_changelist"),
        {"action": "publish_selected", "_selected_action": [policy.pk], "index": 0},
        follow=True,
    )


def test_publish_action_refuses_the_drafter_four_eyes(alem, admin_web, site_admin):
    services.role_grant(user=site_admin, fund=alem.fund, role=R.MANAGE_POLICY)
    admin_web.post(url("governance_approvalpolicy_add"), _draft_post(alem.fund), follow=True)
    draft = ApprovalPolicy.objects.get(fund=alem.fund, version=2)
    before = AuditEvent.objects.count()

    response = _publish(admin_web, draft)

    draft.refresh_from_db()
    assert draft.published_at is None and draft.published_by is None
    assert messages_of(response) == [
        f"{draft}: A policy version must be published by a different administrator than its "
        "drafter."
    ]
    assert AuditEvent.objects.count() == before


def test_publish_action_puts_a_draft_in_force_for_a_second_administrator(alem, site_admin):
    draft = services.policy_draft(
        actor=alem.users["fundadmin"],
        fund=alem.fund,
        stages=[StageSpec(1, "Risk review", R.REVIEW_RISK, 1)],
    )
    services.role_grant(user=site_admin, fund=alem.fund, role=R.MANAGE_POLICY)
    web = signed_in(Client(), site_admin)

    response = _publish(web, draft)

    draft.refresh_from_db()
    assert draft.published_by == site_admin
    assert messages_of(response) == [f"{draft} is now in force."]
    event = last_event()
    assert (event.action, event.actor_id, event.payload["version"]) == (
        "policy.published",
        site_admin.pk,
        2,
    )


def test_publish_action_refuses_an_administrator_without_manage_policy(alem, admin_web):
    draft = services.policy_draft(
        actor=alem.users["fundadmin"],
        fund=alem.fund,
        stages=[StageSpec(1, "Risk review", R.REVIEW_RISK, 1)],
    )

    response = _publish(admin_web, draft)

    draft.refresh_from_db()
    assert draft.published_at is None
    assert messages_of(response) == [
        f"{draft}: Publishing a policy needs the manage_policy role on the fund."
    ]


def test_policies_cannot_be_changed_or_deleted_in_admin(alem, admin_web):
    policy = ApprovalPolicy.objects.get(fund=alem.fund, version=1)

    change = admin_web.post(url("governance_approvalpolicy_change", policy.pk), {"note": "edited"})
    delete = admin_web.post(url("governance_approvalpolicy_delete", policy.pk), {"post": "yes"})

    policy.refresh_from_db()
    assert change.status_code == 403
    assert delete.status_code == 403
    assert policy.note == ""
    assert policy.stages.count() == 3


# ---------------------------------------------------------------------------------------------
# The mandate and stage kinds on the policy draft page
# ---------------------------------------------------------------------------------------------


def test_policy_draft_page_starts_from_the_funds_mandate(alem, admin_web):
    response = admin_web.get(url("governance_approvalpolicy_add"), {"fund": alem.fund.pk})

    initial = response.context["form"].initial
    assert {field: initial[field] for field in Fund.MANDATE} == {
        "max_asset_share": Decimal("0.400000"),
        "max_proposal_notional_usd": Decimal("5000000.00"),
        "execution_window_days": 5,
        "price_tolerance": Decimal("0.020000"),
        "max_fee_share": Decimal("0.010000"),
        "custody_cooling_off_hours": 48,
    }


def test_a_mandate_and_stage_kinds_drafted_on_the_page_reach_the_fund_only_when_published(
    alem, admin_web, site_admin
):
    services.role_grant(user=site_admin, fund=alem.fund, role=R.MANAGE_POLICY)
    data = _draft_post(alem.fund) | {
        "max_asset_share": "0.25",
        "custody_cooling_off_hours": "72",
        "stages-2-kinds": ["buy", "sell"],
    }

    response = admin_web.post(url("governance_approvalpolicy_add"), data)

    policy = ApprovalPolicy.objects.get(fund=alem.fund, version=2)
    assert response.status_code == 302
    assert (policy.max_asset_share, policy.custody_cooling_off_hours) == (Decimal("0.25"), 72)
    assert policy.max_proposal_notional_usd == Decimal("5000000.00")  # left empty: the fund's
    assert [s.kinds for s in policy.stages.all()] == [[], [], ["buy", "sell"]]
    fund = Fund.objects.get(pk=alem.fund.pk)
    assert (fund.max_asset_share, fund.custody_cooling_off_hours) == (Decimal("0.40"), 48)

    services.policy_publish(actor=alem.users["fundadmin"], policy_id=policy.pk)

    fund.refresh_from_db()
    assert (fund.max_asset_share, fund.custody_cooling_off_hours) == (Decimal("0.25"), 72)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_asset_share", "1.5"), ("price_tolerance", "0"), ("custody_cooling_off_hours", "721")],
)
def test_policy_draft_page_refuses_a_mandate_out_of_range_on_its_field(
    alem, admin_web, site_admin, field, value
):
    services.role_grant(user=site_admin, fund=alem.fund, role=R.MANAGE_POLICY)
    before = (ApprovalPolicy.objects.count(), AuditEvent.objects.count())

    response = admin_web.post(
        url("governance_approvalpolicy_add"), _draft_post(alem.fund) | {field: value}
    )

    assert response.status_code == 200
    assert list(response.context["form"].errors) == [field]
    assert (ApprovalPolicy.objects.count(), AuditEvent.objects.count()) == before


def test_the_fund_page_shows_the_mandate_read_only(alem, admin_web):
    response = admin_web.get(url("portfolio_fund_change", alem.fund.pk))

    readonly = response.context["adminform"].readonly_fields
    assert set(Fund.MANDATE) <= set(readonly)
    assert "changed by publishing a policy version" in response.content.decode()


# ---------------------------------------------------------------------------------------------
# Nothing in the back office books a ledger entry
# ---------------------------------------------------------------------------------------------


def _admin_pages():
    """(name, kwargs names) of every named page of the admin site."""
    pages = []
    for entry in admin.site.get_urls():
        for pattern in getattr(entry, "url_patterns", [entry]):
            if pattern.name:
                pages.append((pattern.name, set(pattern.pattern.regex.groupindex)))
    return pages


def test_no_back_office_page_books_a_ledger_entry(alem, admin_web, site_admin):
    # Given a site administrator holding every role on the fund
    for role in R:
        services.role_grant(user=site_admin, fund=alem.fund, role=role)
    contribution = {
        "funding_source": alem.funding_source.pk,
        "amount_usd": "1000000.00",
        "asset": alem.asset.pk,
        "quantity": "10",
        "memo": "A tranche booked by one person",
        "action": "contribution",
    }
    before = (
        LedgerEntry.objects.count(),
        AuditEvent.objects.filter(action="contribution.recorded"),
    )
    before = (before[0], before[1].count())
    pages = [
        (name, args)
        for name, args in _admin_pages()
        if args <= {"object_id"} and name not in ("logout", "password_change")
    ]

    # When each page is sent a contribution
    for name, args in pages:
        admin_web.post(
            reverse(f"admin:{name}", kwargs=dict.fromkeys(args, alem.fund.pk)), contribution
        )

    # Then none booked it, and none is named for it
    assert len(pages) > 40
    assert not [name for name, _ in pages if "contribution" in name]
    assert (
        LedgerEntry.objects.count(),
        AuditEvent.objects.filter(action="contribution.recorded").count(),
    ) == before


# ---------------------------------------------------------------------------------------------
# Custody accounts from the fund page
# ---------------------------------------------------------------------------------------------

BTC_BECH32 = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"


def fund_admin_web(user) -> Client:
    """A fund administrator with back-office access to the fund pages."""
    from django.contrib.auth.models import Permission

    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.user_permissions.add(Permission.objects.get(codename="view_fund"))
    return signed_in(Client(), user)


def _custody_request(**terms) -> dict:
    return {
        "action": "add",
        "account": "",
        "name": "Cold vault",
        "kind": "cold_multisig",
        "chain": "Bitcoin",
        "address": BTC_BECH32,
        "account_reference": "",
        "reason": "Cold storage for the BTC reserve",
    } | terms


def _custody_rows() -> tuple[int, int, int]:
    return (
        CustodyAccount.objects.count(),
        CustodyAccountChange.objects.count(),
        AuditEvent.objects.count(),
    )


def test_fund_page_links_to_its_custody_accounts(alem, admin_web):
    response = admin_web.get(url("portfolio_fund_change", alem.fund.pk))

    assert url("portfolio_fund_custody", alem.fund.pk) in response.content.decode()
    assert "portfolio_fund_contribution" not in {name for name, _ in _admin_pages()}


def test_custody_page_requests_and_a_second_administrator_confirms_with_a_code(alem):
    alice, bob = alem.users["fundadmin"], alem.users["fundadmin2"]
    alice_web, bob_web = fund_admin_web(alice), fund_admin_web(bob)
    page = url("portfolio_fund_custody", alem.fund.pk)

    requested = alice_web.post(page, _custody_request())

    change = CustodyAccountChange.objects.get()
    assert requested.status_code == 302
    assert (change.state, change.requested_by, change.address) == ("pending", alice, BTC_BECH32)
    assert CustodyAccount.objects.count() == 0
    shown = alice_web.get(page)
    assert shown.context["pending"][0]["confirm_refusal"].code == "four_eyes_required"
    assert 'value="confirm"' not in shown.content.decode()
    assert 'value="confirm"' in bob_web.get(page).content.decode()

    confirmed = bob_web.post(
        page, {"action": "confirm", "change": change.pk, "otp_token": otp_code(bob)}, follow=True
    )

    account = CustodyAccount.objects.get()
    change.refresh_from_db()
    assert (change.state, change.decided_by, change.account) == ("applied", bob, account)
    assert (account.name, account.address, account.active) == ("Cold vault", BTC_BECH32, True)
    assert messages_of(confirmed)[0].startswith("Confirmed: Cold vault is usable from ")
    assert "cooling off, usable from" in confirmed.content.decode()


def test_custody_page_refuses_the_requesters_own_confirmation_and_writes_nothing(alem):
    alice = alem.users["fundadmin"]
    alice_web = fund_admin_web(alice)
    page = url("portfolio_fund_custody", alem.fund.pk)
    alice_web.post(page, _custody_request())
    change = CustodyAccountChange.objects.get()
    before = _custody_rows()

    response = alice_web.post(
        page, {"action": "confirm", "change": change.pk, "otp_token": otp_code(alice)}, follow=True
    )

    assert messages_of(response)[-1] == (
        "You asked for this change; another fund administrator must confirm it."
    )
    assert _custody_rows() == before


def test_custody_page_refuses_a_bad_address_on_the_form_and_writes_nothing(alem):
    web = fund_admin_web(alem.users["fundadmin"])
    before = _custody_rows()

    response = web.post(
        url("portfolio_fund_custody", alem.fund.pk), _custody_request(address="bc1qnotanaddress")
    )

    assert response.status_code == 200
    assert "address" in response.context["form"].errors
    assert _custody_rows() == before


def test_custody_page_cancels_and_removes(alem):
    alice, bob = alem.users["fundadmin"], alem.users["fundadmin2"]
    alice_web = fund_admin_web(alice)
    page = url("portfolio_fund_custody", alem.fund.pk)
    alice_web.post(page, _custody_request())
    first = CustodyAccountChange.objects.get()
    alice_web.post(page, {"action": "cancel", "change": first.pk})
    alice_web.post(page, _custody_request())
    second = CustodyAccountChange.objects.get(state="pending")
    services.custody_change_confirm(actor=bob, change_id=second.pk, otp_token=otp_code(bob))
    account = CustodyAccount.objects.get()

    removed = alice_web.post(
        page, {"action": "remove", "account": account.pk, "reason": "Signer lost"}, follow=True
    )

    first.refresh_from_db()
    account.refresh_from_db()
    assert (first.state, first.decided_by) == ("cancelled", alice)
    assert (account.active, account.removed_at is not None) == (False, True)
    assert messages_of(removed)[-1] == f"Removed: {account}; no operation uses it from now on."
    assert last_event().action == "custody.account_removed"


def test_custody_page_refuses_an_administrator_without_manage_policy(alem, admin_web):
    page = url("portfolio_fund_custody", alem.fund.pk)
    before = _custody_rows()

    shown = admin_web.get(page)
    response = admin_web.post(page, _custody_request())

    assert shown.status_code == 200
    assert 'id="custody_request_form"' not in shown.content.decode()
    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "Custody accounts are managed by holders of manage_policy on the fund."
    ]
    assert _custody_rows() == before


def test_custody_accounts_and_changes_cannot_be_edited_in_the_admin(alem, admin_web):
    alice, bob = alem.users["fundadmin"], alem.users["fundadmin2"]
    change = services.custody_change_request(
        actor=alice, fund=alem.fund, **_custody_request(account=None)
    )
    services.custody_change_confirm(actor=bob, change_id=change.pk, otp_token=otp_code(bob))
    account = CustodyAccount.objects.get()

    responses = [
        admin_web.get(url("portfolio_custodyaccount_changelist")),
        admin_web.get(url("portfolio_custodyaccount_change", account.pk)),
        admin_web.get(url("governance_custodyaccountchange_change", change.pk)),
        admin_web.post(url("portfolio_custodyaccount_add"), {"name": "Rogue"}),
        admin_web.post(
            url("portfolio_custodyaccount_change", account.pk), {"address": "bc1qrogue"}
        ),
        admin_web.post(url("portfolio_custodyaccount_delete", account.pk), {"post": "yes"}),
        admin_web.post(url("governance_custodyaccountchange_delete", change.pk), {"post": "yes"}),
    ]

    account.refresh_from_db()
    assert [r.status_code for r in responses] == [200, 200, 200, 403, 403, 403, 403]
    assert (account.address, account.active) == (BTC_BECH32, True)
