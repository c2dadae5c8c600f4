"""Accounts changed outside the services are on the record too (issue 14, part 6).

The back-office services audit what they change in people's accounts (``user.deactivated``,
``user.access_changed``, ``user.reactivated``, ``user.password_set``) and mark their saves with
``recorded_by_service()``. Any other save that changes whether an account is active, staff or a
site administrator, or sets its password — ``manage.py createsuperuser``, ``manage.py
changepassword``, a shell — is caught here, on the user model's save signals, and written as
``user.account_changed`` with the old and new values (never a password hash), no actor, and how
it came: ``{"via": "command", "command": "createsuperuser", "os_user": ...}`` under
``manage.py``. An account created without privileges is not recorded (it holds nothing). When
the save ran outside a transaction (a command in autocommit), the event follows it in its own.
What stays outside: SQL, which the checkpoints expose.
"""

import sys
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from django.conf import settings
from django.contrib.auth.hashers import is_password_usable
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from governance import events
from governance.api_tokens import _is_hash_upgrade
from governance.services.back_office import command_via

TRACKED = ("is_active", "is_staff", "is_superuser", "password")
_BEFORE = "_account_record_before"
_by_service: ContextVar[bool] = ContextVar("account_recorded_by_service", default=False)


@contextmanager
def recorded_by_service():
    """Within the block, user saves are audited by the calling service, not here."""
    token = _by_service.set(True)
    try:
        yield
    finally:
        _by_service.reset(token)


def how() -> dict:
    """How the change came: a management command by name, or directly (a shell, a script)."""
    if Path(sys.argv[0]).name in ("manage.py", "django-admin") and len(sys.argv) > 1:
        return command_via(sys.argv[1])
    return {"via": "direct"}


def _password(value: str | None) -> str:
    return "set" if value and is_password_usable(value) else "none"


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="account_record_before")
def _note_before(sender, instance, raw=False, update_fields=None, **kwargs):
    if raw or _by_service.get():
        return
    tracked = set(TRACKED) if update_fields is None else set(TRACKED) & set(update_fields)
    if not tracked:
        return
    stored = None
    if instance.pk is not None:
        stored = sender._default_manager.filter(pk=instance.pk).values(*tracked).first()
    setattr(instance, _BEFORE, (tracked, stored, _is_hash_upgrade(instance, update_fields)))


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="account_record_after")
def _record_after(sender, instance, raw=False, created=False, **kwargs):
    noted = instance.__dict__.pop(_BEFORE, None)
    if noted is None or raw:
        return
    tracked, stored, hash_upgrade = noted
    if stored is None and not (instance.is_staff or instance.is_superuser):
        return  # a new account that holds nothing
    changes = {}
    for name in sorted(tracked - {"password"}):
        old = None if stored is None else stored[name]
        if old != getattr(instance, name):
            changes[name] = {"old": old, "new": getattr(instance, name)}
    if "password" in tracked and not hash_upgrade:
        old = None if stored is None else stored["password"]
        if old != instance.password:
            changes["password"] = {"old": _password(old), "new": _password(instance.password)}
    if not changes:
        return
    with transaction.atomic():
        events.user_account_changed_event(
            user=instance, created=stored is None, changes=changes, via=how()
        )
