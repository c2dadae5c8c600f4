"""Governance's periodic tasks, after portfolio's: everything ``install_schedules`` installs.

See ``portfolio.schedules`` for how a schedule is declared and installed.
"""

import datetime as dt

from django.db import transaction
from django_celery_beat.models import PeriodicTask

from governance.services import back_office
from portfolio import schedules as portfolio_schedules
from portfolio.schedules import Schedule

SCHEDULES = (
    *portfolio_schedules.SCHEDULES,
    Schedule(
        "Expire approvals past their execution window",
        "governance.tasks.proposals_expire",
        dt.timedelta(minutes=5),
        (),
        "Approved proposals not fully executed within the fund's execution window expire.",
    ),
    Schedule(
        "Apply confirmed back-office changes after their cooling-off",
        "governance.tasks.admin_changes_apply",
        dt.timedelta(minutes=1),
        (),
        "A fund role confirmed by a second site administrator takes effect once the cooling-off "
        "period (ALEM_ROLE_COOLING_OFF_HOURS) has passed.",
    ),
    Schedule(
        "Send the tasks waiting in the outbox",
        "governance.tasks.outbox_relay",
        dt.timedelta(minutes=1),
        (),
        "E-mails and other tasks queued by a decision while the broker was down go out once it "
        "is back, oldest first; rows sent more than a week ago are pruned.",
    ),
    Schedule(
        "E-mail the daily digest of what waits",
        "governance.tasks.decision_digest_send",
        None,
        (),
        "To each person, the proposals waiting for their decision and, for treasury operators, "
        "the approved proposals waiting for fills. Nobody with nothing waiting gets an e-mail.",
        daily_at=dt.time(8, 0),
    ),
    Schedule(
        "Verify the audit chain",
        "governance.tasks.audit_chain_verify",
        dt.timedelta(hours=1),
        (),
        "Recompute every audit event's hash from the first to the last; the auditors' page "
        "shows the latest result, and a broken chain is logged as an error.",
    ),
    Schedule(
        "Sign a checkpoint of the audit chain",
        "governance.tasks.audit_checkpoint_sign",
        dt.timedelta(hours=1),
        (),
        "Sign the public digest chain's head with the checkpoint key if it moved since the last "
        "checkpoint; a chain that does not verify is logged as an error and not signed.",
    ),
    Schedule(
        "Anchor audit checkpoints on chain",
        "governance.tasks.checkpoint_anchors_run",
        dt.timedelta(minutes=5),
        (),
        "When ALEM_ANCHOR_RPC_URL is set, write each new checkpoint's digest on chain and "
        "confirm it; failures are retried with back-off and shown in Admin, Checkpoint anchors.",
    ),
)


def schedules_install(*, reset: bool = False, via: dict | None = None) -> list[tuple[str, str]]:
    """Install every declared schedule (``portfolio.schedules.schedules_install``), on the
    record: each periodic task created or put back is audited with its old and new values
    (``governance.services.back_office``; ``via`` defaults to the ``install_schedules``
    command)."""
    via = via or back_office.command_via("install_schedules")
    names = [schedule.name for schedule in SCHEDULES]
    with transaction.atomic():
        before = {
            task.name: back_office.record_state(task)
            for task in PeriodicTask.objects.filter(name__in=names)
        }
        results = portfolio_schedules.schedules_install(schedules=SCHEDULES, reset=reset)
        for task in PeriodicTask.objects.filter(name__in=names).order_by("name"):
            back_office.record_saved(
                actor=None, instance=task, before=before.get(task.name), via=via
            )
    return results
