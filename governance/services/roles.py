"""Fund roles (django-guardian object permissions on ``Fund``): granted through four eyes,
revoked by one site administrator at once."""

from django.core.exceptions import ValidationError
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from governance import events, permissions
from governance.exceptions import InvalidTransition
from governance.roles import direct_grants, has_role
from governance.services._locks import lock_fund, lock_person
from governance.services.decisions import approvals_void
from portfolio.models import Fund, FundRole


def _check_role(role: str) -> None:
    if role not in FundRole.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})


def _held(fund: Fund, user) -> list[str]:
    return sorted(role for _, role in direct_grants(fund, user=user))


def role_grant(*, user, fund: Fund, role: str, admin_change=None, via=None) -> bool:
    """Give ``user`` the fund role ``role``; returns False if they already held it.

    No person calls this directly: it is the effect of a confirmed ``AdminChange``
    (``admin_change``, audited as done by its confirmer), or the command line's bootstrap
    (``manage.py grant_role``, ``seed_demo``; audited with no actor).
    Effects: a guardian object permission on ``fund``, under the fund's lock; audit event
    ``role.granted``.
    """
    _check_role(role)
    with transaction.atomic():
        lock_fund(fund)
        held = _held(fund, user)
        if role in held:
            return False
        assign_perm(f"portfolio.{role}", user, fund)
        actor = admin_change.confirmed_by if admin_change else None
        events.role_granted_event(
            actor=actor,
            fund=fund,
            user=user,
            role=role,
            held=held,
            admin_change=admin_change,
            via=via,
        )
    return True


def role_revoke(*, actor, user, fund: Fund, role: str, via=None) -> bool:
    """Take the fund role ``role`` from ``user`` at once; returns False if they did not hold it.

    Preconditions: ``actor`` is an active site administrator (or ``None``, the command line); a
    role held through a group is refused (remove the user from the group instead).
    Effects: removes the object permission; audit event ``role.revoked``. The approvals they
    gave in that role on proposals still in review stop counting (``approvals_void``).
    """
    if actor is not None:
        permissions.raise_if_refused(permissions.site_admin_refusal(actor))
    _check_role(role)
    with transaction.atomic():
        lock_person(user)
        approvals_void(actor=actor, user=user, reason="role_revoked", fund=fund, role=role)
        lock_fund(fund)
        held = _held(fund, user)
        if role not in held:
            if has_role(user, fund, role):
                raise InvalidTransition(
                    f"{user.username} holds {role} through a group; remove them from the group."
                )
            return False
        remove_perm(f"portfolio.{role}", user, fund)
        events.role_revoked_event(actor=actor, fund=fund, user=user, role=role, held=held, via=via)
    return True
