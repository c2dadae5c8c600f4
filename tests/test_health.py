"""Liveness and readiness (alem.health): anonymous, cheap, and saying nothing but check names
and states. A failing check turns readiness 503 and is named; a warning keeps it 200."""

import datetime as dt
import json
import socket
import time

import pytest
from django.db import OperationalError, connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from alem import health
from governance.audit import audit_verification_run
from governance.models import AuditVerification
from portfolio.models import PriceFetch
from tests.conftest import REDIS_PROBE_URL
from tests.factories import UserFactory

CHECK_NAMES = ["database", "migrations", "broker", "audit", "prices", "outbox"]
# What a failure's own text might carry; none of it may reach the body.
SECRET_DETAIL = "db.internal.example:5432 password=hunter2 Traceback"


def fetch_succeeded(*, ago: dt.timedelta = dt.timedelta(minutes=1)) -> PriceFetch:
    started = timezone.now() - ago
    return PriceFetch.objects.create(
        provider="binance",
        kind=PriceFetch.Kind.LATEST,
        outcome=PriceFetch.Outcome.OK,
        stored=1,
        started_at=started,
        finished_at=started + dt.timedelta(seconds=1),
    )


@pytest.fixture
def healthy(db):
    """A fund whose chain was verified and whose prices were fetched a minute ago."""
    audit_verification_run()
    fetch_succeeded()


def ready(client) -> tuple[int, dict]:
    response = client.get("/health/ready")
    return response.status_code, json.loads(response.content)


def test_liveness_answers_anonymously_without_touching_the_database(
    client, db, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = client.get("/health/live")

    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}
    assert response["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    assert response.cookies == {}


def test_readiness_is_ok_when_every_check_passes(client, healthy):
    response = client.get("/health/ready")

    assert response.status_code == 200
    assert json.loads(response.content) == {
        "status": "ok",
        "checks": dict.fromkeys(CHECK_NAMES, "ok"),
    }
    assert response.cookies == {}


def test_a_fresh_install_is_ready_with_warnings_for_prices_and_audit(client, db):
    assert ready(client) == (
        200,
        {
            "status": "warn",
            "checks": {
                "database": "ok",
                "migrations": "ok",
                "broker": "ok",
                "audit": "warn",
                "prices": "warn",
                "outbox": "ok",
            },
        },
    )


def _queued(*, ago: dt.timedelta, sent: bool = False):
    from governance.models import TaskOutbox

    created = timezone.now() - ago
    return TaskOutbox.objects.create(
        task="governance.tasks.audit_chain_verify",
        created_at=created,
        available_at=created,
        sent_at=timezone.now() if sent else None,
    )


def test_a_task_stuck_in_the_outbox_warns_and_a_fresh_one_does_not(client, healthy):
    _queued(ago=dt.timedelta(minutes=5))
    _queued(ago=dt.timedelta(hours=2), sent=True)
    assert ready(client)[1]["checks"]["outbox"] == "ok"

    _queued(ago=dt.timedelta(minutes=21))

    status, body = ready(client)
    assert (status, body["status"], body["checks"]["outbox"]) == (200, "warn", "warn")


def test_stale_prices_warn_without_making_the_process_unready(client, healthy, settings):
    settings.ALEM_HEALTH_PRICE_MAX_AGE_SECONDS = 30

    status, body = ready(client)

    assert status == 200
    assert body["status"] == "warn"
    assert body["checks"]["prices"] == "warn"
    assert body["checks"]["audit"] == "ok"


def test_a_failed_fetch_is_not_a_fresh_one(client, healthy):
    PriceFetch.objects.all().delete()
    PriceFetch.objects.create(
        provider="binance",
        outcome=PriceFetch.Outcome.FAILED,
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )

    assert ready(client)[1]["checks"]["prices"] == "warn"


def test_an_old_audit_verification_warns(client, healthy):
    AuditVerification.objects.update(checked_at=timezone.now() - dt.timedelta(hours=3))

    status, body = ready(client)

    assert (status, body["checks"]["audit"]) == (200, "warn")


def test_a_broken_audit_chain_makes_readiness_fail_and_says_nothing_of_why(client, healthy):
    AuditVerification.objects.create(
        checked_at=timezone.now(),
        ok=False,
        verified_count=7,
        first_bad_sequence=8,
        reason=SECRET_DETAIL,
    )

    response = client.get("/health/ready")

    assert response.status_code == 503
    assert json.loads(response.content) == {
        "status": "fail",
        "checks": {
            "database": "ok",
            "migrations": "ok",
            "broker": "ok",
            "audit": "fail",
            "prices": "ok",
            "outbox": "ok",
        },
    }


def test_an_unapplied_migration_makes_readiness_fail(client, healthy):
    MigrationRecorder(connection).record_unapplied("portfolio", "0001_initial")

    status, body = ready(client)

    assert (status, body["status"], body["checks"]["migrations"]) == (503, "fail", "fail")
    assert [name for name, state in body["checks"].items() if state != "ok"] == ["migrations"]


def test_an_unreachable_database_fails_every_check_that_needs_it_and_leaks_nothing(
    client, healthy, monkeypatch
):
    def refuse(*args, **kwargs):
        raise OperationalError(f"could not connect to server {SECRET_DETAIL}")

    with monkeypatch.context() as patched:
        patched.setattr(connection, "cursor", refuse)
        response = client.get("/health/ready")

    assert response.status_code == 503
    assert json.loads(response.content) == {
        "status": "fail",
        "checks": {
            "database": "fail",
            "migrations": "fail",
            "broker": "ok",
            "audit": "fail",
            "prices": "fail",
            "outbox": "fail",
        },
    }
    assert b"hunter2" not in response.content and b"5432" not in response.content


def test_an_unreachable_redis_makes_readiness_fail(client, healthy, settings):
    # Nothing listens on port 1: the connection is refused at once.
    settings.CELERY_BROKER_URL = "redis://:hunter2@127.0.0.1:1/0"

    response = client.get("/health/ready")

    assert response.status_code == 503
    assert json.loads(response.content)["checks"]["broker"] == "fail"
    assert b"hunter2" not in response.content and b"127.0.0.1" not in response.content


def test_a_redis_that_never_answers_fails_within_a_second(client, healthy, settings):
    # A socket that accepts connections (the kernel's backlog) but never answers a PING.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    try:
        started = time.monotonic()
        status, body = ready(client)
        elapsed = time.monotonic() - started
    finally:
        silent.close()

    assert (status, body["checks"]["broker"]) == (503, "fail")
    assert elapsed < 2


@pytest.mark.redis
def test_a_reachable_redis_broker_is_ok(client, healthy, settings):
    settings.CELERY_BROKER_URL = REDIS_PROBE_URL

    assert ready(client) == (200, {"status": "ok", "checks": dict.fromkeys(CHECK_NAMES, "ok")})


def test_a_missing_filesystem_broker_folder_makes_readiness_fail(
    client, healthy, settings, tmp_path
):
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(tmp_path / "queue"),
        "data_folder_out": str(tmp_path / "queue"),
        "processed_folder": str(tmp_path / "processed"),
        "control_folder": str(tmp_path / "control"),
    }
    for name in ("queue", "processed"):
        (tmp_path / name).mkdir()

    assert ready(client)[1]["checks"]["broker"] == "fail"

    (tmp_path / "control").mkdir()
    assert ready(client) == (200, {"status": "ok", "checks": dict.fromkeys(CHECK_NAMES, "ok")})


def test_a_check_that_raises_anything_fails_and_its_text_stays_in_the_log(
    client, healthy, monkeypatch, caplog
):
    def broken():
        raise RuntimeError(SECRET_DETAIL)

    monkeypatch.setitem(health.CHECKS, "prices", broken)

    response = client.get("/health/ready")

    assert response.status_code == 503
    assert json.loads(response.content)["checks"]["prices"] == "fail"
    assert b"hunter2" not in response.content
    assert SECRET_DETAIL in caplog.text


def test_health_endpoints_answer_a_signed_in_visitor_too(client, healthy):
    client.force_login(UserFactory())

    assert client.get("/health/live").status_code == 200
    assert ready(client)[0] == 200


def test_health_endpoints_take_no_writes(client, db):
    assert client.post("/health/live").status_code == 405
    assert client.post("/health/ready").status_code == 405
    assert client.head("/health/live").status_code == 200
