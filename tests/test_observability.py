"""Request ids, JSON log lines and Sentry (alem.observability).

Every request has an id, taken from ``X-Request-ID`` when it is safe and made up otherwise; it
is on the response, on each log line written while the request runs, and on the lines of the
Celery tasks the request queued. Logs are JSON lines with DEBUG off. Sentry starts only when
``SENTRY_DSN`` is set (checked in a fresh interpreter, so this one stays without it).
"""

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery
from celery.worker.request import Request
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from alem import health
from alem.observability import (
    TASK_HEADER,
    JsonFormatter,
    RequestIdFilter,
    logging_config,
    request_id_var,
)

BASE_DIR = Path(__file__).resolve().parent.parent
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def log_lines(monkeypatch):
    """What the project's console handler (settings.LOGGING) writes, line by line."""
    [console] = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler.formatter, JsonFormatter)
    ]
    stream = io.StringIO()
    monkeypatch.setattr(console, "stream", stream)
    return lambda: stream.getvalue().splitlines()


def test_a_safe_incoming_request_id_comes_back_on_the_response(client):
    response = client.get("/health/live", headers={"X-Request-ID": "lb-7f3a.01_X"})

    assert response["X-Request-ID"] == "lb-7f3a.01_X"


@pytest.mark.parametrize(
    "incoming",
    ["", "two words", "id\nforged log line", "<script>", "x" * 65, "ид-запроса"],
)
def test_an_unsafe_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/health/live", headers={"X-Request-ID": incoming})

    assert GENERATED_ID.fullmatch(response["X-Request-ID"])


def test_each_request_without_an_id_gets_a_new_one(client):
    first = client.get("/health/live")["X-Request-ID"]
    second = client.get("/health/live")["X-Request-ID"]

    assert GENERATED_ID.fullmatch(first) and GENERATED_ID.fullmatch(second)
    assert first != second
    assert request_id_var.get() is None


def test_with_debug_off_the_logs_are_json_lines_on_stdout():
    assert settings.LOG_FORMAT == "json"
    console = settings.LOGGING["handlers"]["console"]
    assert (console["formatter"], console["stream"]) == ("json", "ext://sys.stdout")


def test_a_line_logged_during_a_request_is_json_with_its_request_id(
    client, db, monkeypatch, log_lines
):
    def broken():
        raise RuntimeError("the broker is gone")

    monkeypatch.setitem(health.CHECKS, "broker", broken)

    response = client.get("/health/ready", headers={"X-Request-ID": "probe-42"})

    entries = [json.loads(line) for line in log_lines()]
    failure = next(entry for entry in entries if entry["logger"] == "alem.health")
    assert {key: failure[key] for key in ("level", "message", "request_id")} == {
        "level": "WARNING",
        "message": "Readiness check broker failed",
        "request_id": "probe-42",
    }
    assert failure["exception"].endswith("RuntimeError: the broker is gone")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", failure["time"])
    # Django's own line for the 503, written after the middleware returned, has the id too.
    answered = next(entry for entry in entries if entry["logger"] == "django.request")
    assert (answered["level"], answered["request_id"]) == ("ERROR", "probe-42")
    assert response["X-Request-ID"] == "probe-42"


def test_an_exception_is_one_json_line_with_its_traceback(log_lines):
    try:
        raise ValueError("quantity out of range\nsecond line")
    except ValueError:
        logging.getLogger("portfolio.test").exception("Could not value the position")

    [line] = log_lines()
    entry = json.loads(line)
    assert entry["level"] == "ERROR"
    assert entry["logger"] == "portfolio.test"
    assert entry["message"] == "Could not value the position"
    assert entry["request_id"] is None
    assert entry["exception"].startswith("Traceback (most recent call last):\n")
    assert entry["exception"].endswith("ValueError: quantity out of range\nsecond line")


def test_the_text_format_shows_the_request_id_too():
    config = logging_config(log_format="text", level="INFO")
    formatter = logging.Formatter(config["formatters"]["text"]["format"])
    record = logging.LogRecord("alem", logging.INFO, __file__, 1, "hello", None, None)
    token = request_id_var.set("req-9")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)

    assert formatter.format(record).endswith(" INFO alem [req-9] hello")


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT must be json or text"):
        logging_config(log_format="xml", level="INFO")


# ---------------------------------------------------------------------------------------------
# Celery: the id goes with the task
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def memory_app():
    """A Celery app on kombu's in-memory broker: a task really is published, and then run the
    way a worker runs what it receives (``celery.worker.request.Request``)."""
    app = Celery("observability-tests", broker="memory://", set_as_current=False)
    app.conf.task_always_eager = False
    seen = {}

    @app.task(name="tests.observability.remember_request_id", bind=True)
    def remember_request_id(self):
        seen["request_id"] = request_id_var.get()
        logging.getLogger("portfolio.tasks").info("Ran inside the worker")

    app.remember_request_id = remember_request_id
    app.seen = seen
    return app


def receive(app):
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue("celery")
        try:
            return queue.get(timeout=2)
        finally:
            queue.close()


def test_a_task_queued_during_a_request_runs_with_its_request_id(memory_app, log_lines):
    token = request_id_var.set("req-from-web")
    try:
        memory_app.remember_request_id.apply_async()
    finally:
        request_id_var.reset(token)
    message = receive(memory_app)
    assert message.headers[TASK_HEADER] == "req-from-web"

    # In the worker, no request is under way until the task's own starts.
    assert request_id_var.get() is None
    Request(message, app=memory_app, task=memory_app.remember_request_id).execute()

    assert memory_app.seen["request_id"] == "req-from-web"
    ran = [json.loads(line) for line in log_lines() if "Ran inside the worker" in line]
    assert [entry["request_id"] for entry in ran] == ["req-from-web"]
    # After the task the worker is back to no request.
    assert request_id_var.get() is None


def test_a_task_queued_by_no_request_is_known_by_its_task_id(memory_app):
    result = memory_app.remember_request_id.apply_async()
    message = receive(memory_app)
    assert TASK_HEADER not in message.headers

    Request(message, app=memory_app, task=memory_app.remember_request_id).execute()

    assert memory_app.seen["request_id"] == result.id
    assert request_id_var.get() is None


def test_a_task_run_in_place_keeps_the_request_id_of_its_caller(memory_app):
    memory_app.conf.task_always_eager = True
    token = request_id_var.set("req-eager")
    try:
        memory_app.remember_request_id.apply_async()
        after = request_id_var.get()
    finally:
        request_id_var.reset(token)

    assert memory_app.seen["request_id"] == "req-eager"
    assert after == "req-eager"


def test_an_unsafe_id_in_a_task_header_is_replaced(memory_app):
    memory_app.remember_request_id.apply_async()
    message = receive(memory_app)
    # As a publisher other than Alem's might have sent it.
    message.headers[TASK_HEADER] = "bad id\nforged"

    Request(message, app=memory_app, task=memory_app.remember_request_id).execute()

    assert GENERATED_ID.fullmatch(memory_app.seen["request_id"])


# ---------------------------------------------------------------------------------------------
# Sentry, in a fresh interpreter
# ---------------------------------------------------------------------------------------------

SHOW_SENTRY = """
import json, django
django.setup()
import sentry_sdk
from django.conf import settings

client = sentry_sdk.get_client()
print(json.dumps({
    "active": client.is_active(),
    "dsn": client.dsn,
    "environment": client.options.get("environment"),
    "release": client.options.get("release"),
    "send_default_pii": client.options.get("send_default_pii"),
    "max_request_body_size": client.options.get("max_request_body_size"),
    "include_local_variables": client.options.get("include_local_variables"),
    "integrations": sorted(name for name in getattr(client, "integrations", {})
                           if name in ("django", "celery")),
    "log_format": settings.LOG_FORMAT,
}))
"""


def show_sentry(**variables: str) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SENTRY_") and key != "LOG_FORMAT"
    }
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", **variables)
    result = subprocess.run(
        [sys.executable, "-c", SHOW_SENTRY],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_without_a_dsn_sentry_is_off():
    shown = show_sentry()

    assert (shown["active"], shown["dsn"], shown["integrations"]) == (False, None, [])


def test_with_a_dsn_sentry_reports_django_and_celery_errors_without_personal_data():
    shown = show_sentry(
        SENTRY_DSN="https://public@example.invalid/1",
        SENTRY_ENVIRONMENT="staging",
        SENTRY_RELEASE="alem@1.2.3",
    )

    assert shown == {
        "active": True,
        "dsn": "https://public@example.invalid/1",
        "environment": "staging",
        "release": "alem@1.2.3",
        "send_default_pii": False,
        "max_request_body_size": "never",
        "include_local_variables": False,
        "integrations": ["celery", "django"],
        "log_format": "json",
    }


def test_in_debug_the_logs_are_text_unless_asked_otherwise():
    assert show_sentry(DEBUG="1")["log_format"] == "text"
    assert show_sentry(DEBUG="1", LOG_FORMAT="json")["log_format"] == "json"
