"""The transactional outbox: tasks a change queues wait in the database until the broker has them.

A service that queues follow-up work (the e-mail to the deciders of a stage that opened, an
auditor's "Verify now") calls ``outbox_enqueue`` inside its transaction. That writes a
``TaskOutbox`` row with the change, so the change and its follow-up commit together or not at
all, and registers a hook that publishes the task as soon as the transaction commits. With Redis
or the worker's broker down the hook logs the refusal and leaves the row unsent: the decision is
already committed and the request succeeds. ``outbox_relay`` (the task
``governance.tasks.outbox_relay`` every minute, or ``manage.py outbox_relay``) sends the rows
still waiting, oldest first, backing off a row the broker refused, and prunes rows sent more
than ``KEEP_SENT_DAYS`` ago.

Every send locks its row (``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL) and marks it sent in
the same transaction, so neither two relays nor a relay and the hook send one row twice. A row is
marked sent after the broker accepted it; if the database fails between the two, the row goes out
again later. Delivery is therefore at least once, as it already is with ``acks_late`` workers:
the tasks queued here tolerate a repeat (``stage_opened_notify`` e-mails nobody once the proposal
moved on, and at worst repeats a notice that asks for nothing; ``audit_chain_verify`` only adds a
verification).

The web request's id (``alem.observability``) is stored on the row and restored while the row is
published, so the task's headers carry it (``before_task_publish``) however late it goes out, and
the relay's log lines about the row carry it too.
"""

import datetime as dt
import logging
import re
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from alem.celery import app
from alem.observability import request_id_var
from governance.models import TaskOutbox

logger = logging.getLogger(__name__)

# Rows the relay sends per transaction.
RELAY_BATCH = 100
# A refused row waits 1, 2, 4, 8 minutes…, at most this long, before the next try: once the
# broker is back, everything waiting goes out within this time.
MAX_BACKOFF = dt.timedelta(minutes=10)
# Sent rows are kept this long (to see what went out and when), then pruned.
KEEP_SENT_DAYS = 7
# What of an error is kept on the row: its type and the start of its message, with any
# credentials of a URL (redis://user:password@host) masked.
ERROR_LENGTH = 300
# Errors that say the broker cannot be reached (kombu wraps redis's; sockets raise OSError).
BROKER_ERRORS = (OperationalError, OSError)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s/@]*@", re.I)


@dataclass(frozen=True)
class RelayReport:
    """What one relay run did: rows sent, rows not sent (backed off), rows pruned."""

    sent: int = 0
    failed: int = 0
    pruned: int = 0


def outbox_enqueue(task, *args, **kwargs) -> TaskOutbox:
    """Queue ``task(*args, **kwargs)`` with the current transaction's change.

    Call inside the service's transaction (or in autocommit, where the row commits at once).
    Effects: a ``TaskOutbox`` row, and an on-commit hook that tries to publish it at once; a
    rollback leaves neither. Arguments must be JSON (ids, not objects), as Celery's are.
    """
    now = timezone.now()
    row = TaskOutbox.objects.create(
        task=task.name,
        args=list(args),
        kwargs=kwargs,
        request_id=request_id_var.get() or "",
        created_at=now,
        available_at=now,
    )
    row_id = row.pk

    # A named function, not a lambda: Django logs a robust hook's failure by its __qualname__.
    def outbox_send_after_commit():
        outbox_send(row_id)

    # robust: whatever goes wrong, the committed change stands (outbox_send already catches the
    # broker's errors; this also covers the database failing while marking the row).
    transaction.on_commit(outbox_send_after_commit, robust=True)
    return row


def outbox_send(row_id: int, *, now: dt.datetime | None = None) -> bool:
    """Publish one waiting row now; True if the broker took it.

    Locks the row, skipping it if a relay holds it; a row already sent is left alone. A refusal
    is logged and backs the row off; it never raises.
    """
    with transaction.atomic():
        row = (
            TaskOutbox.objects.select_for_update(skip_locked=True)
            .filter(pk=row_id, sent_at__isnull=True)
            .first()
        )
        if row is None:
            return False
        return _publish(row, now=now or timezone.now()) is None


def outbox_relay(*, now: dt.datetime | None = None, batch: int = RELAY_BATCH) -> RelayReport:
    """Send the rows still waiting whose back-off has passed, oldest first; prune old sent rows.

    Each batch is one transaction holding its rows' locks (``SKIP LOCKED``: two relays running at
    once share the rows out, never send one twice). The run stops at the first row the broker
    refuses (it cannot be reached): that row backs off, the others wait for the next run instead
    of each waiting for the same refusal. A row that fails for a reason of its own (its task is
    no longer registered) backs off and the run goes on.
    """
    now = now or timezone.now()
    sent = failed = 0
    broker_down = False
    while not broker_down:
        with transaction.atomic():
            rows = list(
                TaskOutbox.objects.select_for_update(skip_locked=True)
                .filter(sent_at__isnull=True, available_at__lte=now)
                .order_by("created_at", "pk")[:batch]
            )
            for row in rows:
                error = _publish(row, now=now)
                if error is None:
                    sent += 1
                    continue
                failed += 1
                if isinstance(error, BROKER_ERRORS):
                    broker_down = True
                    break
        if len(rows) < batch:
            break
    pruned = outbox_prune(now=now)
    if sent or failed or pruned:
        logger.info(
            "Outbox: %d task(s) sent, %d not sent, %d old row(s) pruned.", sent, failed, pruned
        )
    return RelayReport(sent=sent, failed=failed, pruned=pruned)


def outbox_prune(*, now: dt.datetime | None = None) -> int:
    """Delete the rows sent more than ``KEEP_SENT_DAYS`` ago; unsent rows are never deleted."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=KEEP_SENT_DAYS)
    deleted, _ = TaskOutbox.objects.filter(sent_at__lt=cutoff).delete()
    return deleted


def outbox_stuck(*, now: dt.datetime | None = None) -> bool:
    """Whether a task has waited unsent through two of the longest back-offs: the broker, the
    worker or beat has been down that long (the readiness check warns)."""
    since = (now or timezone.now()) - 2 * MAX_BACKOFF
    return TaskOutbox.objects.filter(sent_at__isnull=True, created_at__lt=since).exists()


def outbox_waiting() -> int:
    """How many tasks wait unsent (for the operators' eyes: logs, health, the command)."""
    return TaskOutbox.objects.filter(sent_at__isnull=True).count()


def error_summary(exc: BaseException) -> str:
    """The error's type and message, short and without a URL's credentials, to keep on the row."""
    text = f"{type(exc).__name__}: {exc}"
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", " ".join(text.split()))
    return text[:ERROR_LENGTH]


def backoff(attempts: int) -> dt.timedelta:
    """How long a row waits after its ``attempts``-th refusal: 1, 2, 4… minutes, at most 10."""
    return min(dt.timedelta(minutes=2 ** min(attempts - 1, 10)), MAX_BACKOFF)


def _publish(row: TaskOutbox, *, now: dt.datetime) -> Exception | None:
    """Hand the locked row's task to the broker with its request id and record the outcome:
    ``None`` once the broker took it, else the error (the row backs off)."""
    row.attempts += 1
    # The request's id is current while the task is published, so alem.observability's
    # before_task_publish puts it in the headers (and a task run in place, eager, keeps it);
    # the lines logged about this row carry it too.
    token = request_id_var.set(row.request_id or None)
    try:
        try:
            _task(row.task).delay(*row.args, **row.kwargs)
        except Exception as exc:  # the broker's errors are many (kombu, redis, OSError…)
            row.last_error = error_summary(exc)
            row.available_at = now + backoff(row.attempts)
            row.save(update_fields=["attempts", "last_error", "available_at"])
            logger.warning(
                "Task %s (outbox #%s) could not be queued, attempt %d: %s. It waits in the "
                "outbox; next try after %s.",
                row.task,
                row.pk,
                row.attempts,
                row.last_error,
                row.available_at.isoformat(timespec="seconds"),
            )
            return exc
    finally:
        request_id_var.reset(token)
    row.sent_at = max(now, row.created_at)
    row.last_error = ""
    row.save(update_fields=["attempts", "last_error", "sent_at"])
    return None


def _task(name: str):
    """The registered task called ``name``; the task modules are imported if not yet."""
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]
