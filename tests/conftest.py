"""Shared fixtures, and the rule for tests that need a real service.

A test marked ``postgres`` runs only when the database under test is PostgreSQL. When it is
not, the test skips with the reason, except under CI (``CI`` set) with PostgreSQL unreachable,
where it fails: CI must never pass by skipping.
"""

import os

import pytest
from django.db import connection
from hypothesis import settings as hypothesis_settings

from tests.factories import FundBuilder
from tests.profiles import PROFILE

hypothesis_settings.load_profile(PROFILE)

IN_CI = bool(os.environ.get("CI"))
POSTGRES_PROBE_URL = os.environ.get(
    "POSTGRES_PROBE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_PROBE_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_PROBE_URL, connect_timeout=2):
            return True
    except Exception:
        return False


def redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_PROBE_URL, socket_timeout=2).ping())
    except Exception:
        return False


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres") and connection.vendor != "postgresql":
        if IN_CI and not postgres_reachable():
            pytest.fail("PostgreSQL is required under CI but is not reachable.")
        pytest.skip(
            "needs PostgreSQL: runs when DATABASE_URL points at PostgreSQL "
            "(the second pass of make test in CI)"
        )
    if item.get_closest_marker("redis") and not redis_reachable():
        if IN_CI:
            pytest.fail(f"Redis is required under CI but {REDIS_PROBE_URL} does not answer.")
        pytest.skip(f"needs Redis at {REDIS_PROBE_URL}")


@pytest.fixture(autouse=True)
def default_language():
    """Each test starts in the site's default language. A request activates its language for
    the rest of the thread, so without this one test's Kazakh page would leak into the next
    test's lazy strings."""
    from django.conf import settings
    from django.utils import translation

    with translation.override(settings.LANGUAGE_CODE):
        yield


@pytest.fixture(autouse=True)
def celery_tasks_run_in_process():
    """Tasks queued by the code under test (e-mails on commit) run in the test process instead
    of landing on the real broker, where a later worker test could pick them up. Tests that
    need a real worker start one in its own process, which this does not touch."""
    from alem.celery import app

    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager


@pytest.fixture
def alem(db):
    """A fund shaped like the Alem Crypto Fund: users per role, USD 25M cash, policy v1
    (risk 1, committee 2 of 3, ministry from USD 1M), BNB priced at USD 600."""
    return FundBuilder.alem_like()
