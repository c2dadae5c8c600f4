"""Who holds which role on which fund: django-guardian object permissions on ``Fund``.

Superusers get no fund role implicitly: site administrators run the back office, they do not
decide on public money unless a role is granted to them like to anyone else.
"""

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db.models import Q, QuerySet
from guardian.models import UserObjectPermission
from guardian.shortcuts import get_group_perms, get_user_perms

from portfolio.models import Fund, FundRole
from portfolio.selectors import funds_for_user

__all__ = ["direct_grants", "funds_for_user", "has_role", "roles_on_fund", "users_with_role"]

User = get_user_model()


def roles_on_fund(user, fund: Fund) -> set[str]:
    """The role codenames ``user`` holds on ``fund``, directly or through a group."""
    if not user.is_authenticated or not user.is_active:
        return set()
    codenames = set(get_user_perms(user, fund).values_list("codename", flat=True))
    codenames |= set(get_group_perms(user, fund).values_list("codename", flat=True))
    return codenames & set(FundRole.values)


def direct_grants(fund: Fund, *, user=None) -> set[tuple[int, str]]:
    """(user id, role) pairs granted to users themselves on ``fund``, not through a group,
    whether or not the user is active. Only these can be granted or revoked per user."""
    grants = UserObjectPermission.objects.filter(
        content_type=ContentType.objects.get_for_model(Fund),
        object_pk=str(fund.pk),
        permission__codename__in=FundRole.values,
    )
    if user is not None:
        grants = grants.filter(user=user)
    return set(grants.values_list("user_id", "permission__codename"))


def has_role(user, fund: Fund, role: str) -> bool:
    return role in roles_on_fund(user, fund)


def users_with_role(fund: Fund, role: str) -> QuerySet:
    """Active users holding ``role`` on ``fund``, directly or through a group."""
    direct = User.objects.filter(
        userobjectpermission__permission__codename=role,
        userobjectpermission__object_pk=str(fund.pk),
        userobjectpermission__content_type__app_label="portfolio",
        userobjectpermission__content_type__model="fund",
    )
    via_group = User.objects.filter(
        groups__groupobjectpermission__permission__codename=role,
        groups__groupobjectpermission__object_pk=str(fund.pk),
        groups__groupobjectpermission__content_type__app_label="portfolio",
        groups__groupobjectpermission__content_type__model="fund",
    )
    return User.objects.filter(
        Q(pk__in=direct.values("pk")) | Q(pk__in=via_group.values("pk")), is_active=True
    )
