"""Celery tasks of the governance app: thin wrappers over ``governance.services`` and
``governance.notifications``.

Schedules are declared in ``governance.schedules``. The e-mail tasks retry only the recipients the
mail server refused, so a retry never repeats an e-mail that was delivered. The tasks a change
queues reach the broker through the outbox (``governance.outbox``), at least once: each tolerates
running again.
"""

import logging

from celery import shared_task
from django.contrib.auth import get_user_model

from governance import audit, checkpoints, notifications, outbox, services

logger = logging.getLogger(__name__)

# A mail server that is down for a while: five more tries, five minutes apart.
MAIL_RETRIES = {"max_retries": 5, "default_retry_delay": 5 * 60}


@shared_task(name="governance.tasks.proposals_expire", ignore_result=True)
def proposals_expire() -> list[int]:
    """Expire approved proposals whose execution window has passed (rule 9)."""
    expired = services.proposals_expire_due()
    if expired:
        logger.info("Expired proposals %s", expired)
    return expired


@shared_task(name="governance.tasks.admin_changes_apply", ignore_result=True)
def admin_changes_apply() -> list[int]:
    """Put into effect the confirmed back-office changes whose cooling-off has ended."""
    applied = services.admin_changes_apply_due()
    if applied:
        logger.info("Applied back-office changes %s", applied)
    return applied


@shared_task(
    bind=True, name="governance.tasks.stage_opened_notify", ignore_result=True, **MAIL_RETRIES
)
def stage_opened_notify(
    self, proposal_id: int, version: int, stage_order: int, user_ids: list[int] | None = None
) -> int:
    """E-mail the deciders of the stage that opened; nothing if the proposal moved on since.

    Queued by ``governance.services`` when a stage opens, after the transaction commits.
    """
    delivery = notifications.notify_stage_opened(
        proposal_id, version, stage_order, user_ids=user_ids
    )
    if delivery.failed:
        raise self.retry(
            args=(proposal_id, version, stage_order), kwargs={"user_ids": list(delivery.failed)}
        )
    return len(delivery.sent)


@shared_task(
    bind=True, name="governance.tasks.decision_digest_send", ignore_result=True, **MAIL_RETRIES
)
def decision_digest_send(self, user_ids: list[int] | None = None) -> int:
    """E-mail each person the daily digest of what waits for them (scheduled at 08:00 Almaty)."""
    delivery = notifications.digest_send(user_ids=user_ids)
    logger.info("Daily digest: %d sent, %d failed.", len(delivery.sent), len(delivery.failed))
    if delivery.failed:
        raise self.retry(args=(), kwargs={"user_ids": list(delivery.failed)})
    return len(delivery.sent)


@shared_task(name="governance.tasks.audit_chain_verify", ignore_result=True)
def audit_chain_verify(requested_by_id: int | None = None) -> bool:
    """Verify the whole audit chain and keep the result (hourly, and when an auditor asks)."""
    requested_by = None
    if requested_by_id is not None:
        requested_by = get_user_model().objects.filter(pk=requested_by_id).first()
    return audit.audit_verification_run(requested_by=requested_by).ok


@shared_task(name="governance.tasks.audit_checkpoint_sign", ignore_result=True)
def audit_checkpoint_sign() -> int | None:
    """Sign a checkpoint of the audit chain's head if it moved (hourly); the sequence signed.

    A chain that does not verify is logged as an error and left unsigned (rule 11).
    """
    try:
        checkpoint = checkpoints.checkpoint_sign()
    except checkpoints.ChainBroken as broken:
        logger.error("%s", broken)
        return None
    return checkpoint.sequence if checkpoint else None


@shared_task(name="governance.tasks.checkpoint_anchors_run", ignore_result=True)
def checkpoint_anchors_run() -> dict | None:
    """Anchor new checkpoints on chain and confirm those sent (every five minutes); nothing
    when anchoring is off (``governance.anchoring``)."""
    run = checkpoints.checkpoint_anchors_run()
    return None if run is None else vars(run)


@shared_task(name="governance.tasks.outbox_relay", ignore_result=True)
def outbox_relay() -> dict:
    """Send the queued tasks the broker refused when their change committed (every minute)."""
    report = outbox.outbox_relay()
    return {"sent": report.sent, "failed": report.failed, "pruned": report.pruned}
