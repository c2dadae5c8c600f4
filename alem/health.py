"""Liveness and readiness, for a load balancer or an orchestrator to poll without a session.

``/health/live`` answers 200 as long as the process serves requests; it touches nothing else,
not even the database, so a database outage never gets healthy processes restarted.

``/health/ready`` says whether this process should be sent traffic. Each check is ``ok``,
``warn`` or ``fail``:

- ``database``: a trivial query answers. Fails otherwise.
- ``migrations``: every migration this code knows is applied. Fails otherwise (a process
  newer than its database would write rows the schema does not have).
- ``broker``: Celery's broker answers: Redis to a ping within half a second, or the
  filesystem broker's folders exist and are writable. Fails otherwise.
- ``audit``: the latest verification of the audit chain found it intact. Fails when it found
  it broken (history that cannot be trusted: no new decisions until an operator looks); warns
  when none has run yet (a fresh install) or the latest is older than
  ``ALEM_HEALTH_AUDIT_MAX_AGE_SECONDS`` (the hourly schedule is not running).
- ``prices``: a latest-price fetch succeeded within ``ALEM_HEALTH_PRICE_MAX_AGE_SECONDS``.
  Warns otherwise, including before the first fetch: the providers are outside our control,
  and taking every web process out of service when they are down would stop officials from
  working while the pages already mark stale prices.
- ``outbox``: no task has waited unsent in the outbox (``governance.outbox``) through two of
  its longest back-offs. Warns otherwise: the broker, the worker or beat has been down that
  long; the changes themselves are committed and their tasks wait safely.

Any ``fail`` answers 503, else 200; the body names the checks and their states and nothing
else (no host, version, count or error text: the endpoint is public). Why a check failed goes
to the log.
"""

import datetime as dt
import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"
# Seconds a broker may take to answer, per connection step; the probe never hangs on it.
BROKER_TIMEOUT_SECONDS = 0.5


class CheckWarning(Exception):
    """A check found something to look at that does not make the process unready."""


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


@functools.cache
def _known_migrations() -> tuple[tuple[tuple[str, str], tuple[tuple[str, str], ...]], ...]:
    """Every migration on disk, with the ones it replaces: read once per process, since the
    code cannot change under a running process (this is the slow part of the check)."""
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return tuple(
        (key, tuple(tuple(replaced) for replaced in migration.replaces))
        for key, migration in loader.graph.nodes.items()
    )


def check_migrations() -> None:
    applied = set(MigrationRecorder(connection).applied_migrations())
    for key, replaces in _known_migrations():
        # A squashed migration counts as applied when everything it replaces was.
        if key not in applied and not (replaces and set(replaces) <= applied):
            raise RuntimeError(f"Migration {key[0]}.{key[1]} is not applied.")


def check_broker() -> None:
    url = str(settings.CELERY_BROKER_URL)
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
            socket_timeout=BROKER_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            client.ping()
        finally:
            client.close()
    elif url.startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS or {}
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            folder = options.get(key)
            if folder and not (Path(folder).is_dir() and os.access(folder, os.W_OK | os.X_OK)):
                raise RuntimeError(f"The broker folder {key} is missing or not writable.")
    else:
        from kombu import Connection

        with Connection(url, connect_timeout=BROKER_TIMEOUT_SECONDS) as broker:
            broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)


def check_audit() -> None:
    from governance.audit import audit_verification_latest

    latest = audit_verification_latest()
    if latest is None:
        raise CheckWarning("The audit chain has not been verified yet.")
    if not latest.ok:
        raise RuntimeError(f"The latest audit verification found the chain broken ({latest}).")
    age = timezone.now() - latest.checked_at
    if age > dt.timedelta(seconds=settings.ALEM_HEALTH_AUDIT_MAX_AGE_SECONDS):
        raise CheckWarning(f"The latest audit verification is {age} old.")


def check_prices() -> None:
    from portfolio.models import MarketDataProvider, PriceFetch

    cutoff = timezone.now() - dt.timedelta(seconds=settings.ALEM_HEALTH_PRICE_MAX_AGE_SECONDS)
    # Filtered on the columns of the fetch index (provider, kind, started_at), so the query
    # stays cheap however many fetches are kept.
    fresh = PriceFetch.objects.filter(
        provider__in=MarketDataProvider.values,
        kind=PriceFetch.Kind.LATEST,
        started_at__gte=cutoff,
        outcome__in=[PriceFetch.Outcome.OK, PriceFetch.Outcome.PARTIAL],
    ).exists()
    if not fresh:
        raise CheckWarning("No latest-price fetch succeeded within the window.")


def check_outbox() -> None:
    from governance.outbox import outbox_stuck

    if outbox_stuck():
        raise CheckWarning("Tasks have waited in the outbox through two back-off periods.")


# In the order they run; the ones after ``database`` need it.
CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "migrations": check_migrations,
    "broker": check_broker,
    "audit": check_audit,
    "prices": check_prices,
    "outbox": check_outbox,
}
NEEDS_DATABASE = frozenset({"migrations", "audit", "prices", "outbox"})


def readiness() -> dict[str, str]:
    """The state of each check, by name. Never raises: a check that raises fails."""
    states: dict[str, str] = {}
    for name, check in CHECKS.items():
        if name in NEEDS_DATABASE and states.get("database") == FAIL:
            # Not tried: each would wait for the same unreachable database again.
            states[name] = FAIL
            continue
        try:
            check()
        except CheckWarning as warning:
            states[name] = WARN
            logger.debug("Readiness check %s warns: %s", name, warning)
        except Exception:
            states[name] = FAIL
            logger.warning("Readiness check %s failed", name, exc_info=True)
        else:
            states[name] = OK
    return states


@require_safe
@never_cache
def live(request):
    """200 while the process answers; touches nothing else."""
    return JsonResponse({"status": OK})


@require_safe
@never_cache
def ready(request):
    """200 when every check is ok or warns, 503 when one fails; names and states only."""
    states = readiness()
    if FAIL in states.values():
        status, http_status = FAIL, 503
    elif WARN in states.values():
        status, http_status = WARN, 200
    else:
        status, http_status = OK, 200
    return JsonResponse({"status": status, "checks": states}, status=http_status)
