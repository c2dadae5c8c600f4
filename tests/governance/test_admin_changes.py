"""No one acts alone, not even a site administrator (DESIGN rule 14, docs/rules.md).

Each attack of the red team is replayed at the level it used (the service, the back office, the
database) and shown to change nothing; then the two-person path is shown to work.
"""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import services
from governance.exceptions import (
    FourEyesRequired,
    InvalidTransition,
    NotPermitted,
    SecondFactorInvalid,
)
from governance.models import AdminChange, AuditEvent, Decision
from governance.roles import has_role
from portfolio.models import FundRole
from tests.factories import UserFactory, otp_code, otp_device
from tests.web import signed_in

R = FundRole
Kind = AdminChange.Kind
User = get_user_model()


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def root2(db):
    return UserFactory(username="root2", is_staff=True, is_superuser=True)


def last_sequence() -> int:
    event = AuditEvent.objects.order_by("-sequence").first()
    return event.sequence if event else 0


def actions_after(mark: int) -> list[str]:
    return list(
        AuditEvent.objects.filter(sequence__gt=mark)
        .order_by("sequence")
        .values_list("action", flat=True)
    )


def request_role(actor, user, fund, role=R.VOTE_COMMITTEE) -> AdminChange:
    return services.admin_change_request(
        actor=actor, kind=Kind.ROLE_GRANT, user=user, fund=fund, role=role, reason="New member"
    )


def confirm(actor, change) -> AdminChange:
    return services.admin_change_confirm(
        actor=actor, change_id=change.pk, otp_token=otp_code(actor)
    )


def admin_url(name: str, *args) -> str:
    return reverse(f"admin:{name}", args=args)


# ---------------------------------------------------------------------------------------------
# One site administrator alone cannot widen who may act
# ---------------------------------------------------------------------------------------------


def test_a_role_request_grants_nothing_until_a_second_administrator_confirms(alem, root):
    newcomer = UserFactory(username="newcomer")
    mark = last_sequence()

    change = request_role(root, newcomer, alem.fund, R.AUDIT)

    assert change.state == AdminChange.State.PENDING
    assert not has_role(newcomer, alem.fund, R.AUDIT)
    assert actions_after(mark) == ["admin_change.requested"]


def test_the_requester_cannot_confirm_their_own_request(alem, root):
    newcomer = UserFactory(username="newcomer")
    change = request_role(root, newcomer, alem.fund)
    mark = last_sequence()

    with pytest.raises(FourEyesRequired, match="another site administrator must confirm"):
        confirm(root, change)

    change.refresh_from_db()
    assert change.state == AdminChange.State.PENDING
    assert not has_role(newcomer, alem.fund, R.VOTE_COMMITTEE)
    assert actions_after(mark) == []


def test_nobody_confirms_a_change_for_themself(alem, root, root2):
    change = request_role(root, root2, alem.fund)

    with pytest.raises(FourEyesRequired, match="This change is for you"):
        confirm(root2, change)

    change.refresh_from_db()
    assert change.state == AdminChange.State.PENDING
    assert not has_role(root2, alem.fund, R.VOTE_COMMITTEE)


@pytest.mark.parametrize("who", ["fund_admin", "staff", "inactive_superuser"])
def test_only_an_active_site_administrator_requests_or_confirms(alem, root, who):
    actor = {
        "fund_admin": alem.users["fundadmin"],
        "staff": UserFactory(username="clerk", is_staff=True),
        "inactive_superuser": UserFactory(username="old", is_superuser=True, is_active=False),
    }[who]
    newcomer = UserFactory(username="newcomer")
    change = request_role(root, newcomer, alem.fund)
    mark = last_sequence()

    with pytest.raises(NotPermitted):
        request_role(actor, newcomer, alem.fund, R.AUDIT)
    with pytest.raises(NotPermitted):
        confirm(actor, change)

    assert AdminChange.objects.count() == 1
    assert actions_after(mark) == []


def test_a_confirmation_needs_the_confirmers_own_current_code(alem, root, root2):
    newcomer = UserFactory(username="newcomer")
    change = request_role(root, newcomer, alem.fund, R.AUDIT)
    otp_device(root2)

    with pytest.raises(SecondFactorInvalid):
        services.admin_change_confirm(actor=root2, change_id=change.pk, otp_token="000000")
    # The requester's code is no use to the confirmer either.
    with pytest.raises(SecondFactorInvalid):
        services.admin_change_confirm(actor=root2, change_id=change.pk, otp_token=otp_code(root))

    change.refresh_from_db()
    assert change.state == AdminChange.State.PENDING
    assert not has_role(newcomer, alem.fund, R.AUDIT)


def test_a_superuser_who_grants_themself_a_deciding_role_cannot_approve(alem, root):
    """The red team's first attack: grant yourself the ministry role and sign off alone."""
    proposal = alem.proposal(submit=True, notional_usd=alem.fund.max_proposal_notional_usd)
    request_role(root, root, alem.fund, R.REVIEW_RISK)

    with pytest.raises(NotPermitted):
        services.decision_record(
            proposal_id=proposal.pk, user=root, verdict="approve", otp_token=otp_code(root)
        )

    assert not Decision.objects.filter(proposal=proposal).exists()


def test_sock_puppets_made_by_one_administrator_get_nothing(alem, root):
    """Accounts one administrator creates hold nothing, and one of them cannot confirm."""
    puppet = UserFactory(username="puppet")
    puppet_admin = UserFactory(username="puppet_admin")
    request_role(root, puppet, alem.fund, R.APPROVE_MINISTRY)
    promote = services.admin_change_request(
        actor=root, kind=Kind.SUPERUSER_GRANT, user=puppet_admin, reason="Help"
    )

    with pytest.raises(NotPermitted):
        confirm(puppet_admin, promote)

    puppet_admin.refresh_from_db()
    assert not puppet_admin.is_superuser
    assert not has_role(puppet, alem.fund, R.APPROVE_MINISTRY)


def test_the_database_refuses_a_change_confirmed_by_its_requester_or_beneficiary(alem, root, root2):
    change = request_role(root, root2, alem.fund, R.AUDIT)
    now = timezone.now()
    confirmed = {
        "state": "confirmed",
        "confirmed_at": now,
        "confirmed_by_device": "otp_totp.totpdevice/1",
        "effective_at": now,
    }

    for confirmer in (root, root2):
        with pytest.raises(IntegrityError), transaction.atomic():
            AdminChange.objects.filter(pk=change.pk).update(confirmed_by=confirmer, **confirmed)


def test_the_same_change_cannot_wait_twice(alem, root):
    newcomer = UserFactory(username="newcomer")
    request_role(root, newcomer, alem.fund)

    with pytest.raises(InvalidTransition, match="already waiting"):
        request_role(root, newcomer, alem.fund)

    assert AdminChange.objects.count() == 1


@pytest.mark.parametrize(
    "kind, fund, role, field",
    [
        (Kind.ROLE_GRANT, None, "", "role"),
        (Kind.ROLE_GRANT, "fund", "superpower", "role"),
        (Kind.STAFF_GRANT, "fund", "", "role"),
        ("launch_missiles", None, "", "kind"),
    ],
)
def test_a_malformed_request_is_refused_with_the_field_named(alem, root, kind, fund, role, field):
    newcomer = UserFactory(username="newcomer")
    fund = alem.fund if fund else None

    with pytest.raises(ValidationError) as error:
        services.admin_change_request(
            actor=root, kind=kind, user=newcomer, fund=fund, role=role, reason="x"
        )

    assert field in error.value.message_dict
    assert not AdminChange.objects.exists()


def test_a_request_needs_a_reason_without_hidden_characters(alem, root):
    newcomer = UserFactory(username="newcomer")

    with pytest.raises(ValidationError):
        services.admin_change_request(actor=root, kind=Kind.STAFF_GRANT, user=newcomer, reason="  ")
    with pytest.raises(ValidationError):
        services.admin_change_request(
            actor=root, kind=Kind.STAFF_GRANT, user=newcomer, reason="ok\u202e"
        )

    assert not AdminChange.objects.exists()


# ---------------------------------------------------------------------------------------------
# Two administrators: the change takes effect, a deciding role after the cooling-off
# ---------------------------------------------------------------------------------------------


def test_a_confirmed_deciding_role_is_usable_only_after_the_cooling_off(
    alem, root, root2, settings
):
    settings.ALEM_ROLE_COOLING_OFF_HOURS = 24
    newcomer = UserFactory(username="risk2")
    proposal = alem.proposal(submit=True)
    change = request_role(root, newcomer, alem.fund, R.REVIEW_RISK)

    change = confirm(root2, change)

    assert change.state == AdminChange.State.CONFIRMED
    assert change.effective_at - change.confirmed_at == dt.timedelta(hours=24)
    assert not has_role(newcomer, alem.fund, R.REVIEW_RISK)
    with pytest.raises(NotPermitted):
        services.decision_record(
            proposal_id=proposal.pk, user=newcomer, verdict="approve", otp_token=otp_code(newcomer)
        )
    # Not yet due: nothing happens.
    assert services.admin_changes_apply_due(now=change.effective_at - dt.timedelta(seconds=1)) == []
    assert not has_role(newcomer, alem.fund, R.REVIEW_RISK)

    mark = last_sequence()
    assert services.admin_changes_apply_due(now=change.effective_at) == [change.pk]

    change.refresh_from_db()
    assert change.state == AdminChange.State.APPLIED
    assert has_role(newcomer, alem.fund, R.REVIEW_RISK)
    granted = AuditEvent.objects.get(sequence__gt=mark, action="role.granted")
    assert granted.actor == root2
    assert granted.payload["admin_change"] == change.pk
    services.decision_record(
        proposal_id=proposal.pk, user=newcomer, verdict="approve", otp_token=otp_code(newcomer)
    )


def test_a_role_that_decides_nothing_takes_effect_at_confirmation(alem, root, root2):
    newcomer = UserFactory(username="auditor2")
    change = request_role(root, newcomer, alem.fund, R.AUDIT)
    mark = last_sequence()

    change = confirm(root2, change)

    assert change.state == AdminChange.State.APPLIED
    assert has_role(newcomer, alem.fund, R.AUDIT)
    assert actions_after(mark) == ["admin_change.confirmed", "role.granted"]


def test_a_change_cancelled_while_cooling_off_never_takes_effect(alem, root, root2):
    newcomer = UserFactory(username="committee4")
    change = confirm(root2, request_role(root, newcomer, alem.fund))

    services.admin_change_cancel(actor=root, change_id=change.pk)

    assert services.admin_changes_apply_due(now=change.effective_at) == []
    change.refresh_from_db()
    assert change.state == AdminChange.State.CANCELLED
    assert not has_role(newcomer, alem.fund, R.VOTE_COMMITTEE)
    with pytest.raises(InvalidTransition):
        confirm(root2, change)


@pytest.mark.parametrize("kind", [Kind.STAFF_GRANT, Kind.SUPERUSER_GRANT])
def test_back_office_access_needs_two_administrators(alem, root, root2, kind):
    newcomer = UserFactory(username="newcomer")
    change = services.admin_change_request(actor=root, kind=kind, user=newcomer, reason="Clerk")
    newcomer.refresh_from_db()
    assert not newcomer.is_staff

    confirm(root2, change)

    newcomer.refresh_from_db()
    assert newcomer.is_staff
    assert newcomer.is_superuser == (kind == Kind.SUPERUSER_GRANT)
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor) == ("user.access_changed", root2)


def test_an_authenticator_reset_needs_two_administrators(alem, root, root2):
    ministry = alem.users["ministry"]
    device = otp_device(ministry)
    change = services.admin_change_request(
        actor=root, kind=Kind.SECOND_FACTOR_RESET, user=ministry, reason="Lost phone"
    )
    assert TOTPDevice.objects.filter(user=ministry).exists()

    confirm(root2, change)

    assert not TOTPDevice.objects.filter(user=ministry).exists()
    event = AuditEvent.objects.order_by("-sequence").first()
    assert event.action == "second_factor.reset"
    assert event.payload["devices"] == [device.persistent_id]


def test_reactivating_an_account_needs_two_administrators(alem, root, root2):
    risk = alem.users["risk"]
    services.user_deactivate(actor=root, user=risk)
    change = services.admin_change_request(
        actor=root, kind=Kind.REACTIVATION, user=risk, reason="Back from leave"
    )
    risk.refresh_from_db()
    assert not risk.is_active

    confirm(root2, change)

    risk.refresh_from_db()
    assert risk.is_active


def test_a_change_that_would_change_nothing_is_refused(alem, root):
    with pytest.raises(InvalidTransition, match="already holds"):
        request_role(root, alem.users["risk"], alem.fund, R.REVIEW_RISK)
    with pytest.raises(InvalidTransition, match="already a site administrator"):
        services.admin_change_request(actor=root, kind=Kind.SUPERUSER_GRANT, user=root, reason="x")
    with pytest.raises(InvalidTransition, match="no authenticator"):
        services.admin_change_request(
            actor=root, kind=Kind.SECOND_FACTOR_RESET, user=UserFactory(), reason="x"
        )
    assert not AdminChange.objects.exists()


# ---------------------------------------------------------------------------------------------
# One administrator alone may narrow who may act, at once
# ---------------------------------------------------------------------------------------------


def test_one_administrator_removes_back_office_access_at_once(alem, root, root2):
    services.user_access_remove(actor=root, user=root2)

    root2.refresh_from_db()
    assert (root2.is_staff, root2.is_superuser) == (False, False)
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor, event.payload["is_superuser"]) == (
        "user.access_changed",
        root,
        False,
    )


# ---------------------------------------------------------------------------------------------
# The back office: the same rules, and no secret on any page
# ---------------------------------------------------------------------------------------------


def test_the_admin_user_page_cannot_make_a_superuser_or_grant_permissions(alem, root, client):
    web = signed_in(client, root)
    target = UserFactory(username="target")

    response = web.post(
        admin_url("auth_user_change", target.pk),
        {
            "username": "target",
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "user_permissions": [1, 2, 3],
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )

    assert response.status_code == 302
    target.refresh_from_db()
    assert (target.is_staff, target.is_superuser) == (False, False)
    assert not target.user_permissions.exists()


def test_a_superuser_cannot_enrol_or_delete_someone_elses_authenticator(alem, root, client):
    web = signed_in(client, root)
    ministry = alem.users["ministry"]
    device = otp_device(ministry)

    add = web.post(admin_url("otp_totp_totpdevice_add"), {"user": ministry.pk, "name": "Mine"})
    delete = web.post(admin_url("otp_totp_totpdevice_delete", device.pk), {"post": "yes"})

    assert (add.status_code, delete.status_code) == (403, 403)
    assert list(TOTPDevice.objects.filter(user=ministry)) == [device]


def test_the_requests_page_asks_and_a_second_administrator_confirms(alem, root, root2, client):
    newcomer = UserFactory(username="newcomer")
    web = signed_in(client, root)
    web.post(
        admin_url("governance_adminchange_add"),
        {
            "kind": "role_grant",
            "user": newcomer.pk,
            "fund": alem.fund.pk,
            "role": "audit",
            "reason": "Audit season",
        },
    )
    [change] = AdminChange.objects.all()
    page = admin_url("governance_adminchange_confirm", change.pk)

    own = web.post(page, {"otp_token": otp_code(root)})
    assert "another site administrator must confirm it" in own.content.decode()
    assert not has_role(newcomer, alem.fund, R.AUDIT)

    other = signed_in(type(client)(), root2).post(page, {"otp_token": otp_code(root2)})

    assert other.status_code == 302
    assert has_role(newcomer, alem.fund, R.AUDIT)


def test_a_reason_is_required_on_the_requests_page(alem, root, client):
    web = signed_in(client, root)

    response = web.post(
        admin_url("governance_adminchange_add"),
        {"kind": "staff_grant", "user": UserFactory().pk, "reason": ""},
    )

    assert response.status_code == 200
    assert "reason" in response.context["form"].errors
    assert not AdminChange.objects.exists()


def test_non_superuser_staff_cannot_see_or_make_requests(alem, client):
    staff = UserFactory(username="clerk", is_staff=True)
    web = signed_in(client, staff)

    assert web.get(admin_url("governance_adminchange_changelist")).status_code == 403
    assert web.get(admin_url("governance_adminchange_add")).status_code == 403


def test_no_page_of_the_back_office_or_the_api_shows_a_secret(alem, root, client):
    """Every admin list, every object's page and add page, and the API, as a site administrator:
    no authenticator key (hex or base32) and no API token, nor its digest, appears anywhere."""
    import base64

    from django.contrib import admin
    from rest_framework.test import APIClient

    from governance.api_tokens import api_token_issue

    ministry = alem.users["ministry"]
    device = otp_device(ministry)
    token, token_value = api_token_issue(user=ministry, name="Ministry laptop")
    secrets = {
        device.key,
        device.key.upper(),
        base64.b32encode(device.bin_key).decode(),
        token_value,
        token.digest,
    }
    web = signed_in(client, root)
    pages = []
    for model in admin.site._registry:
        info = model._meta.app_label, model._meta.model_name
        pages.append(admin_url("{}_{}_changelist".format(*info)))
        pages.append(admin_url("{}_{}_add".format(*info)))
        for obj in model._default_manager.all()[:3]:
            pages.append(admin_url("{}_{}_change".format(*info), obj.pk))
    api = APIClient()
    api.force_authenticate(ministry)
    api_pages = ["/api/v1/funds/", "/api/v1/proposals/", "/api/v1/auth/token/", "/api/schema/"]
    api_pages += ["/api/v1/auth/tokens/"]

    responses = [web.get(page) for page in pages] + [api.get(page) for page in api_pages]
    bodies = [response.content.decode() for response in responses]

    assert sum(response.status_code == 200 for response in responses) > 50
    leaked = [secret for secret in secrets for body in bodies if secret in body]
    assert leaked == []


# ---------------------------------------------------------------------------------------------
# Losing a role or an account voids approvals on proposals still in review
# ---------------------------------------------------------------------------------------------


def counting(proposal) -> list[str]:
    return sorted(
        Decision.objects.filter(
            proposal=proposal, proposal_version=proposal.version, voided_at__isnull=True
        ).values_list("user__username", flat=True)
    )


def test_an_approval_stops_counting_when_the_deciders_role_is_revoked(alem, root):
    """The red team's finding: committee1 approved, lost the role, and the proposal went on."""
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    alem.decide(proposal, "committee1")
    mark = last_sequence()

    services.role_revoke(
        actor=root, user=alem.users["committee1"], fund=alem.fund, role=R.VOTE_COMMITTEE
    )
    alem.decide(proposal, "committee2")

    proposal.refresh_from_db()
    assert proposal.state == "in_review"  # one counting approval of the two the stage needs
    assert proposal.current_stage.order == 2
    assert counting(proposal) == ["committee2", "risk"]
    voided = AuditEvent.objects.get(sequence__gt=mark, action="decision.voided")
    assert (voided.actor, voided.payload["user"], voided.payload["reason"]) == (
        root,
        "committee1",
        "role_revoked",
    )
    alem.decide(proposal, "committee3")
    proposal.refresh_from_db()
    assert proposal.state == "approved"


def test_voiding_an_approval_of_a_completed_stage_reopens_it(alem, root):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    alem.decide(proposal, "committee1")
    mark = last_sequence()

    services.role_revoke(actor=root, user=alem.users["risk"], fund=alem.fund, role=R.REVIEW_RISK)

    proposal.refresh_from_db()
    assert proposal.current_stage.order == 1
    assert counting(proposal) == []  # the committee decides again after the new risk review
    assert actions_after(mark) == [
        "decision.voided",
        "decision.voided",
        "proposal.stage_reopened",
        "role.revoked",
    ]
    reasons = AuditEvent.objects.filter(sequence__gt=mark, action="decision.voided")
    assert sorted(e.payload["reason"] for e in reasons) == ["role_revoked", "stage_reopened"]
    with pytest.raises(NotPermitted):  # committee2 waits for the reopened risk stage
        alem.decide(proposal, "committee2")


def test_a_voided_decider_who_is_given_the_role_again_may_decide_again(alem, root):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    alem.decide(proposal, "committee1")
    services.role_revoke(actor=root, user=alem.users["risk"], fund=alem.fund, role=R.REVIEW_RISK)
    services.role_grant(user=alem.users["risk"], fund=alem.fund, role=R.REVIEW_RISK)

    alem.decide(proposal, "risk")
    alem.decide(proposal, "committee1")
    alem.decide(proposal, "committee2")

    proposal.refresh_from_db()
    assert proposal.state == "approved"
    assert Decision.objects.filter(proposal=proposal, voided_at__isnull=False).count() == 2


def test_deactivating_an_account_in_the_back_office_voids_its_approvals(alem, root, client):
    proposal = alem.proposal(submit=True)
    alem.decide(proposal, "risk")
    committee1 = alem.users["committee1"]
    alem.decide(proposal, "committee1")
    web = signed_in(client, root)

    web.post(
        admin_url("auth_user_changelist"),
        {"action": "deactivate_selected", "_selected_action": [committee1.pk]},
    )

    committee1.refresh_from_db()
    assert not committee1.is_active
    assert counting(proposal) == ["risk"]
    event = AuditEvent.objects.get(action="user.deactivated")
    assert (event.actor, event.payload["voided_decisions"]) == (
        root,
        list(Decision.objects.filter(user=committee1).values_list("pk", flat=True)),
    )


def test_approvals_of_decided_proposals_stay_as_they_were(alem, root):
    proposal = alem.approve_fully(alem.proposal(submit=True))

    services.user_deactivate(actor=root, user=alem.users["committee1"])

    proposal.refresh_from_db()
    assert proposal.state == "approved"
    assert not Decision.objects.filter(proposal=proposal, voided_at__isnull=False).exists()


def test_the_admin_user_page_cannot_reactivate_an_account(alem, root, client):
    risk = alem.users["risk"]
    services.user_deactivate(actor=root, user=risk)
    web = signed_in(client, root)

    web.post(
        admin_url("auth_user_change", risk.pk),
        {
            "username": "risk",
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )

    risk.refresh_from_db()
    assert not risk.is_active


def test_an_administrator_setting_someones_password_is_audited(alem, root, client):
    ministry = alem.users["ministry"]
    web = signed_in(client, root)
    mark = last_sequence()
    mismatched = web.post(
        admin_url("auth_user_password_change", ministry.pk),
        {"password1": "a-new-Passw0rd-2026", "password2": "another", "usable_password": "true"},
    )
    assert (mismatched.status_code, actions_after(mark)) == (200, [])

    response = web.post(
        admin_url("auth_user_password_change", ministry.pk),
        {
            "password1": "a-new-Passw0rd-2026",
            "password2": "a-new-Passw0rd-2026",
            "usable_password": "true",
        },
    )

    assert response.status_code == 302
    event = AuditEvent.objects.order_by("-sequence").first()
    assert (event.action, event.actor, event.payload["user"]) == (
        "user.password_set",
        root,
        "ministry",
    )
