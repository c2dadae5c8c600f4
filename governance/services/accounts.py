"""People's accounts: what one site administrator may do alone, because it only narrows who may
act. Widening (reactivation, back-office access) goes through ``admin_changes``."""

from django.db import transaction

from governance import events, permissions
from governance.account_record import recorded_by_service
from governance.services._locks import lock_person
from governance.services.decisions import approvals_void


def user_deactivate(*, actor, user) -> list[int]:
    """Deactivate ``user``'s account at once: they can no longer sign in, their API tokens stop
    working, and their approvals on proposals still in review stop counting.

    Preconditions: ``actor`` is an active site administrator; ``user`` is active.
    Effects: ``is_active`` off, which revokes every API token (``deactivated``, by the user-save
    receiver of ``governance.api_tokens``); ``approvals_void`` on every fund; audit
    ``user.deactivated`` with the voided decisions. Returns the voided decisions' ids.
    """
    permissions.raise_if_refused(permissions.site_admin_refusal(actor))
    with transaction.atomic():
        lock_person(user)
        voided = approvals_void(actor=actor, user=user, reason="account_deactivated")
        user.is_active = False
        with recorded_by_service():
            user.save(update_fields=["is_active"])
        events.user_deactivated_event(actor=actor, user=user, voided=voided)
    return voided


def user_access_remove(*, actor, user) -> None:
    """Take back-office access (staff and site administrator) from ``user`` at once.

    Preconditions: ``actor`` is an active site administrator. Effects: ``is_staff`` and
    ``is_superuser`` off; audit ``user.access_changed``.
    """
    permissions.raise_if_refused(permissions.site_admin_refusal(actor))
    with transaction.atomic():
        before = {"is_staff": user.is_staff, "is_superuser": user.is_superuser}
        user.is_staff = user.is_superuser = False
        with recorded_by_service():
            user.save(update_fields=["is_staff", "is_superuser"])
        events.user_access_changed_event(actor=actor, user=user, before=before)
