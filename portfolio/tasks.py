"""Celery tasks of the portfolio app: thin wrappers over ``portfolio.prices.services``.

Schedules are declared in ``portfolio.schedules``. HTTP retries with backoff happen in
the provider clients, so a task never waits on a countdown; the next scheduled run is the
retry of a failed one. An overlapping run of the same provider does nothing (the running
``PriceFetch`` row is the lock).
"""

import logging

from celery import shared_task

from portfolio.prices import services as price_services
from portfolio.services import nav_snapshots_take_due

logger = logging.getLogger(__name__)


@shared_task(
    name="portfolio.tasks.prices_fetch",
    ignore_result=True,
    # Under the fetch lease (ALEM_PRICE_FETCH_LEASE_SECONDS), so a killed run's lock is freed
    # soon after, and far under the broker's visibility timeout.
    soft_time_limit=180,
    time_limit=240,
)
def prices_fetch(provider: str) -> dict:
    """Fetch and store the latest prices of one provider (``binance``, ``coingecko``,
    ``nbk``)."""
    report = price_services.prices_fetch_latest(provider=provider)
    logger.info(
        "prices_fetch %s: %s, %d stored, %d failure(s) %s",
        provider,
        report.outcome,
        report.stored,
        len(report.failures),
        "; ".join(f"{f.reason}: {f.detail}" for f in report.failures),
    )
    return report.as_json()


@shared_task(name="portfolio.tasks.nav_snapshots_take", ignore_result=True)
def nav_snapshots_take() -> int:
    """Every fund's NAV for today so far and the final NAV of yesterday."""
    return nav_snapshots_take_due()


@shared_task(name="portfolio.tasks.public_disclosures_refresh", ignore_result=True)
def public_disclosures_refresh() -> int:
    """Rebuild every disclosing fund's public document (every 15 minutes, and after a policy
    publication); how many were built."""
    from portfolio.disclosure import disclosures_refresh

    return disclosures_refresh()


@shared_task(
    name="portfolio.tasks.reconciliation_run",
    ignore_result=True,
    # Each reading waits at most ALEM_RECONCILIATION_TIMEOUT_SECONDS; far under the broker's
    # visibility timeout, so a slow run is never handed to a second worker.
    soft_time_limit=900,
    time_limit=960,
)
def reconciliation_run() -> dict:
    """Read every custody address and compare it with the ledger (hourly)."""
    from portfolio.reconciliation.services import reconciliation_run as run

    result = run()
    logger.info(
        "reconciliation_run: %d observed, %d break(s) opened, %d skipped, %d failed",
        result.observed,
        result.breaks_opened,
        len(result.skipped),
        len(result.failures),
    )
    return {
        "observed": result.observed,
        "breaks_opened": result.breaks_opened,
        "skipped": len(result.skipped),
        "failed": len(result.failures),
    }


@shared_task(
    bind=True,
    name="portfolio.tasks.reconciliation_break_notify",
    ignore_result=True,
    max_retries=5,
    default_retry_delay=5 * 60,
)
def reconciliation_break_notify(self, break_id: int, user_ids: list[int] | None = None) -> int:
    """E-mail the fund's auditors and administrators that a break opened (queued through the
    outbox by the observation that opened it); retries only those the mail server refused."""
    from portfolio.reconciliation.notifications import notify_break_opened

    delivery = notify_break_opened(break_id, user_ids=user_ids)
    if delivery.failed:
        raise self.retry(args=(break_id,), kwargs={"user_ids": list(delivery.failed)})
    return len(delivery.sent)
