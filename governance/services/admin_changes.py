"""Four eyes on the back office: widening who may act needs two site administrators.

One site administrator asks for the change (``admin_change_request``); another confirms it with
a fresh one-time code from their own authenticator (``admin_change_confirm``); nobody confirms
their own request or a change for themself. A grant of a deciding role then waits out the
cooling-off period (``ALEM_ROLE_COOLING_OFF_HOURS``) before it takes effect
(``admin_changes_apply_due``, every minute); until then any site administrator may cancel it.
Narrowing (revoking a role, deactivating an account, removing back-office access) is immediate
and needs one person: see ``governance.services.roles`` and ``governance.services.accounts``.
"""

import datetime as dt

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import events, permissions
from governance.account_record import recorded_by_service
from governance.exceptions import InvalidTransition
from governance.models import DECIDING_ROLES, AdminChange
from governance.roles import direct_grants
from governance.second_factor import second_factor_confirm
from governance.services._locks import lock_admin_change
from governance.services.roles import role_grant
from portfolio.models import Fund, FundRole
from portfolio.text import refuse_hidden_characters

Kind = AdminChange.Kind


def cooling_off() -> dt.timedelta:
    return dt.timedelta(hours=settings.ALEM_ROLE_COOLING_OFF_HOURS)


def _already_in_effect(kind: str, user, fund: Fund | None, role: str) -> str | None:
    """Why the change would change nothing, or ``None``."""
    if kind == Kind.ROLE_GRANT and (user.pk, role) in direct_grants(fund, user=user):
        return f"{user.username} already holds {role} on {fund}."
    if kind == Kind.STAFF_GRANT and user.is_staff:
        return f"{user.username} already has back-office access."
    if kind == Kind.SUPERUSER_GRANT and user.is_superuser:
        return f"{user.username} is already a site administrator."
    if kind == Kind.REACTIVATION and user.is_active:
        return f"{user.username}'s account is active."
    if kind == Kind.SECOND_FACTOR_RESET and not TOTPDevice.objects.filter(user=user).exists():
        return f"{user.username} has no authenticator to reset."
    return None


def admin_change_request(
    *, actor, kind: str, user, reason: str, fund: Fund | None = None, role: str = ""
) -> AdminChange:
    """Ask for a change that widens who may act; it waits for a second site administrator.

    Preconditions: ``actor`` is an active site administrator; ``kind`` is an
    ``AdminChange.Kind``; a role grant names a fund and a fund role, the other kinds neither;
    ``reason`` says why (required); the change would change something and is not already
    waiting.
    Effects: a pending ``AdminChange``; audit ``admin_change.requested``. Nothing else changes
    until it is confirmed.
    """
    permissions.raise_if_refused(permissions.site_admin_refusal(actor))
    if kind not in Kind.values:
        raise ValidationError({"kind": f"Unknown change {kind!r}."})
    if kind == Kind.ROLE_GRANT and (fund is None or role not in FundRole.values):
        raise ValidationError({"role": "A role grant names a fund and one of its roles."})
    if kind != Kind.ROLE_GRANT and (fund is not None or role):
        raise ValidationError({"role": "Only a role grant names a fund and a role."})
    reason = reason.strip()
    if not reason:
        raise ValidationError({"reason": "Say why the change is needed."})
    refuse_hidden_characters(reason=reason)
    with transaction.atomic():
        if unchanged := _already_in_effect(kind, user, fund, role):
            raise InvalidTransition(unchanged)
        try:
            with transaction.atomic():
                change = AdminChange.objects.create(
                    kind=kind,
                    user=user,
                    fund=fund,
                    role=role,
                    reason=reason,
                    requested_by=actor,
                    requested_at=timezone.now(),
                )
        except IntegrityError as exc:
            raise InvalidTransition(
                "The same change is already waiting for confirmation or cooling off."
            ) from exc
        events.admin_change_requested_event(change=change)
    return change


def admin_change_confirm(*, actor, change_id: int, otp_token: str | None) -> AdminChange:
    """Confirm a pending change as the second site administrator.

    Preconditions (``permissions.admin_change_confirm_refusal``): ``actor`` is an active site
    administrator, neither the requester nor the person the change is for; the change is
    pending; ``otp_token`` is a fresh code from the actor's own authenticator.
    Effects: the change is confirmed with the actor's device; audit ``admin_change.confirmed``.
    It takes effect now, or, for a deciding role, after the cooling-off period.
    """
    with transaction.atomic():
        change = lock_admin_change(change_id)
        permissions.raise_if_refused(permissions.admin_change_confirm_refusal(actor, change))
        device = second_factor_confirm(user=actor, otp_token=otp_token)
        now = timezone.now()
        cooling = change.kind == Kind.ROLE_GRANT and change.role in DECIDING_ROLES
        change.state = AdminChange.State.CONFIRMED
        change.confirmed_by = actor
        change.confirmed_at = now
        change.confirmed_by_device = device
        change.effective_at = now + cooling_off() if cooling else now
        change.save(
            update_fields=[
                "state",
                "confirmed_by",
                "confirmed_at",
                "confirmed_by_device",
                "effective_at",
            ]
        )
        events.admin_change_confirmed_event(change=change)
        if change.effective_at <= now:
            _apply(change, now)
    return change


def admin_change_cancel(*, actor, change_id: int) -> AdminChange:
    """Cancel a change before it takes effect; one site administrator is enough.

    Effects: the change is cancelled; audit ``admin_change.cancelled``.
    """
    with transaction.atomic():
        change = lock_admin_change(change_id)
        permissions.raise_if_refused(permissions.admin_change_cancel_refusal(actor, change))
        change.state = AdminChange.State.CANCELLED
        change.cancelled_by = actor
        change.cancelled_at = timezone.now()
        change.save(update_fields=["state", "cancelled_by", "cancelled_at"])
        events.admin_change_cancelled_event(change=change)
    return change


def admin_changes_apply_due(*, now: dt.datetime | None = None) -> list[int]:
    """Put into effect the confirmed changes whose cooling-off has ended (task
    ``governance.tasks.admin_changes_apply``, every minute). Returns their ids."""
    now = now or timezone.now()
    due = AdminChange.objects.filter(
        state=AdminChange.State.CONFIRMED, effective_at__lte=now
    ).values_list("pk", flat=True)
    applied = []
    for change_id in due:
        with transaction.atomic():
            change = lock_admin_change(change_id)
            if change.state == AdminChange.State.CONFIRMED:  # not cancelled meanwhile
                _apply(change, now)
                applied.append(change_id)
    return applied


def _apply(change: AdminChange, now: dt.datetime) -> None:
    """Make the confirmed change, audited as done by its confirmer."""
    user, actor = change.user, change.confirmed_by
    if change.kind == Kind.ROLE_GRANT:
        role_grant(user=user, fund=change.fund, role=change.role, admin_change=change)
    elif change.kind in (Kind.STAFF_GRANT, Kind.SUPERUSER_GRANT):
        before = {"is_staff": user.is_staff, "is_superuser": user.is_superuser}
        user.is_staff = True
        user.is_superuser = user.is_superuser or change.kind == Kind.SUPERUSER_GRANT
        with recorded_by_service():
            user.save(update_fields=["is_staff", "is_superuser"])
        events.user_access_changed_event(actor=actor, user=user, before=before, admin_change=change)
    elif change.kind == Kind.REACTIVATION:
        user.is_active = True
        with recorded_by_service():
            user.save(update_fields=["is_active"])
        events.user_reactivated_event(actor=actor, user=user, admin_change=change)
    elif change.kind == Kind.SECOND_FACTOR_RESET:
        devices = TOTPDevice.objects.filter(user=user).order_by("pk")
        reset = [device.persistent_id for device in devices]
        devices.delete()
        events.second_factor_reset_event(actor=actor, user=user, devices=reset, admin_change=change)
    change.state = AdminChange.State.APPLIED
    change.applied_at = now
    change.save(update_fields=["state", "applied_at"])
