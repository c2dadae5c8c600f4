"""The back office on the record: every creation, change or deletion of a fund, asset, funding
source or periodic task made in Django admin or by a management command writes an audit event
with who did it, how, and each changed field's old and new value (issue 14, part 6).

The admin pages call these through ``governance.admin_audit.OnTheRecordAdminMixin``; commands
pass ``command_via(name)``, since a command has no signed-in user (the actor is empty and the
payload names the command and the operating-system user who ran it). People's accounts and
fund roles have their own services and events (``accounts``, ``roles``, ``admin_changes``).
What stays outside: raw SQL, which the chain's record verification and the signed checkpoints
are there to expose.
"""

import datetime as dt
import getpass
from contextlib import contextmanager
from decimal import Decimal

from django.db import transaction

from governance import events

ADMIN = {"via": "admin"}


def command_via(command: str) -> dict:
    """How a management command is recorded: no actor, the command and the OS user."""
    try:
        os_user = getpass.getuser()
    except (KeyError, OSError):  # no name for the process's uid (a bare container)
        os_user = ""
    return {"via": "command", "command": command, "os_user": os_user}


def _plain(value):
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


def record_state(instance) -> dict:
    """The row's fields as recorded: foreign keys by id, many-to-many as sorted ids, decimals
    and times as strings; the key and fields the database stamps itself (``auto_now``) left
    out."""
    state = {}
    for field in instance._meta.concrete_fields:
        if field.primary_key or getattr(field, "auto_now", False):
            continue
        state[field.attname] = _plain(field.value_from_object(instance))
    if instance.pk is not None:
        for field in instance._meta.many_to_many:
            related = getattr(instance, field.name).values_list("pk", flat=True)
            state[field.name] = sorted(related)
    return state


def record_stored(model, pk) -> dict | None:
    """``record_state`` of the row as stored now, or ``None`` if there is none."""
    if pk is None:
        return None
    stored = model._default_manager.filter(pk=pk).first()
    return None if stored is None else record_state(stored)


def record_saved(*, actor, instance, before: dict | None, via: dict):
    """Audit a saved row against ``before`` (``None``: it was created): ``back_office.
    record_created``, or ``back_office.record_changed`` if any field changed (nothing is written
    when none did). Call inside the transaction of the save."""
    after = record_stored(type(instance), instance.pk)
    if before is None:
        return events.record_created_event(actor=actor, instance=instance, after=after, via=via)
    if before == after:
        return None
    return events.record_changed_event(
        actor=actor, instance=instance, before=before, after=after, via=via
    )


@contextmanager
def on_the_record(*, actor, instance, via: dict):
    """Save or change ``instance`` inside the block; the change is audited in one transaction.

    ``instance`` may be unsaved (a creation). Use for changes made outside the admin's forms
    (admin actions, commands)."""
    with transaction.atomic():
        before = record_stored(type(instance), instance.pk)
        yield instance
        record_saved(actor=actor, instance=instance, before=before, via=via)


def record_delete(*, actor, instance, via: dict) -> None:
    """Delete ``instance`` and audit ``back_office.record_deleted`` with its last values."""
    with transaction.atomic():
        before = record_stored(type(instance), instance.pk) or {}
        object_id = instance.pk
        instance.delete()
        record_deleted(actor=actor, instance=instance, object_id=object_id, before=before, via=via)


def record_deleted(*, actor, instance, object_id, before: dict, via: dict):
    """Audit a row already deleted (``before``: its last values), in the deleting transaction."""
    return events.record_deleted_event(
        actor=actor, instance=instance, object_id=object_id, before=before, via=via
    )
