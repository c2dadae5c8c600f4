"""Shared fixtures, and the rule for tests that need a real service.

The database is always PostgreSQL: ``make test`` starts the embedded server (embedded_db.py)
unless DATABASE_URL names another one. A test marked ``redis`` runs only when Redis answers;
otherwise it skips with the reason, except under CI (``CI`` set), where it fails: CI must never
pass by skipping.

The common funded fund (``alem``) is built once per module and each test runs in a savepoint
over it; see ``alem_module``.
"""

import os

import pytest
from django.db import transaction
from hypothesis import settings as hypothesis_settings

from alem.celery import app
from tests.factories import FundBuilder
from tests.profiles import PROFILE

hypothesis_settings.load_profile(PROFILE)

IN_CI = bool(os.environ.get("CI"))
REDIS_PROBE_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
# Set on every test of a module that uses the shared fund (see alem_module).
SHARES_THE_FUND = pytest.StashKey[bool]()


def redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_PROBE_URL, socket_timeout=2).ping())
    except Exception:
        return False


def pytest_runtest_setup(item):
    if item.stash.get(SHARES_THE_FUND, False) and _is_transactional(item):
        pytest.fail(
            "A transaction=True test cannot share a module with the alem fixture: the shared "
            "fund lives in the module's uncommitted transaction. Move the test to a module "
            "that does not use alem."
        )
    if item.get_closest_marker("redis") and not redis_reachable():
        if IN_CI:
            pytest.fail(f"Redis is required under CI but {REDIS_PROBE_URL} does not answer.")
        pytest.skip(f"needs Redis at {REDIS_PROBE_URL}")


def pytest_collection_modifyitems(items):
    """Every test of a module that uses the shared fund (``alem_module``) runs inside the
    module's transaction, whether or not it asks for the fund, so what a test sees does not
    depend on which tests ran before it on the same worker. The fund is set up first, before
    any test's own transaction opens."""
    shared = {item.module for item in items if "alem_module" in getattr(item, "fixturenames", ())}
    for item in items:
        if getattr(item, "module", None) not in shared:
            continue
        item.stash[SHARES_THE_FUND] = True
        if "alem_module" not in item.fixturenames:
            item.fixturenames.insert(0, "alem_module")


def _is_transactional(item) -> bool:
    marker = item.get_closest_marker("django_db")
    requested = set(getattr(item, "fixturenames", ()))
    return bool(marker and marker.kwargs.get("transaction")) or bool(
        requested & {"transactional_db", "live_server"}
    )


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


@pytest.fixture(scope="module")
def alem_module(django_db_setup, django_db_blocker):
    """The shared fund, built once per test module inside a transaction that is rolled back
    when the module ends. Each test runs in a savepoint inside it (pytest-django's ``db``), so
    what a test writes is gone before the next one starts."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield FundBuilder.alem_like()
        transaction.set_rollback(True)


@pytest.fixture
def alem(alem_module, db):
    """A fund shaped like the Alem Crypto Fund: users per role, USD 25M cash, policy v1
    (risk 1, committee 2 of 3, ministry from USD 1M), BNB priced at USD 600.

    Built once per module (``alem_module``) and read afresh for each test, so no test sees
    another's rows or in-memory changes. A test that needs committed data (``transaction=True``)
    builds its own fund, in a module that does not use this fixture."""
    return alem_module.reloaded()


@pytest.fixture
def eager():
    """Celery tasks queued with ``delay`` run at once, in the test, and raise what they raise."""
    before = (app.conf.task_always_eager, app.conf.task_eager_propagates)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield
    app.conf.task_always_eager, app.conf.task_eager_propagates = before
