"""Celery tasks of the governance app: thin wrappers over ``governance.services``.

Schedules are declared in ``alem.schedules``.
"""

import logging

from celery import shared_task

from governance import services

logger = logging.getLogger(__name__)


@shared_task(name="governance.tasks.proposals_expire", ignore_result=True)
def proposals_expire() -> list[int]:
    """Expire approved proposals whose execution window has passed (rule 9)."""
    expired = services.proposals_expire_due()
    if expired:
        logger.info("Expired proposals %s", expired)
    return expired
