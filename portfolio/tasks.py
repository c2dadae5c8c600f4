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
