"""Granting and revoking fund roles (django-guardian object permissions on ``Fund``)."""

from django.core.exceptions import ValidationError
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from governance import events
from governance.exceptions import InvalidTransition, NotPermitted
from governance.roles import direct_grants, has_role
from governance.services._locks import lock_fund
from portfolio.models import Fund, FundRole


def _check_role_change(actor, role: str) -> None:
    """Role grants are the site administrator's; ``actor=None`` is the command line."""
    if actor is not None and not (actor.is_active and actor.is_superuser):
        raise NotPermitted("Only a site administrator may grant or revoke fund roles.")
    if role not in FundRole.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})


def role_grant(*, actor, user, fund: Fund, role: str) -> bool:
    """Give ``user`` the fund role ``role``; returns False if they already held it.

    Preconditions: ``actor`` is an active site administrator (or ``None``, the command line).
    Effects: a guardian object permission on ``fund``, under the fund's lock; audit event
    ``role.granted``.
    """
    _check_role_change(actor, role)
    with transaction.atomic():
        lock_fund(fund)
        if (user.pk, role) in direct_grants(fund, user=user):
            return False
        assign_perm(f"portfolio.{role}", user, fund)
        events.role_granted_event(actor=actor, fund=fund, user=user, role=role)
    return True


def role_revoke(*, actor, user, fund: Fund, role: str) -> bool:
    """Take the fund role ``role`` from ``user``; returns False if they did not hold it.

    Preconditions: as ``role_grant``; a role held through a group is refused (remove the user
    from the group instead).
    Effects: removes the object permission; audit event ``role.revoked``.
    """
    _check_role_change(actor, role)
    with transaction.atomic():
        lock_fund(fund)
        if (user.pk, role) not in direct_grants(fund, user=user):
            if has_role(user, fund, role):
                raise InvalidTransition(
                    f"{user.username} holds {role} through a group; remove them from the group."
                )
            return False
        remove_perm(f"portfolio.{role}", user, fund)
        events.role_revoked_event(actor=actor, fund=fund, user=user, role=role)
    return True
