"""What operators see: a request id on every log line, logs as JSON lines, errors in Sentry.

A request's id comes from its ``X-Request-ID`` header when that looks like an id, else it is
made up here; it is kept in a context variable for the request's life, sent back on the
response, added to every log record (``RequestIdFilter``) and carried in the headers of the
Celery tasks the request queues, so the worker's lines carry it too (the signal handlers
below, connected in ``alem.celery``).

Nothing here may touch models or settings at import: ``alem.settings`` imports this module.
"""

import datetime as dt
import json
import logging
import re
import uuid
from contextvars import ContextVar, Token

from django.core.exceptions import ImproperlyConfigured

# The id of the request (or task) being served, None outside of one.
request_id_var: ContextVar[str | None] = ContextVar("alem_request_id", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
# The Celery message header that carries the id from the publisher to the worker.
TASK_HEADER = "alem_request_id"
# An incoming id is taken only if it cannot forge a log line or smuggle markup: a proxy's or a
# load balancer's id (a uuid, a hex string) fits; anything else is replaced.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_from(value: str | None) -> str:
    """The incoming id if it is safe to log, else a new one."""
    if value and SAFE_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Give each request an id, for its whole life and its response. First in MIDDLEWARE, so
    every other middleware's log lines carry it too."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


# ---------------------------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Put the current request id on every record as ``request_id`` ("-" outside a request),
    so both the JSON and the text format can show it. Django logs a response's 4xx or 5xx
    (``django.request``) after the middleware has returned, with the request on the record:
    its id is taken from there."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = (
            request_id_var.get()
            or getattr(getattr(record, "request", None), "request_id", None)
            or "-"
        )
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, request_id, and
    the traceback as one string when there is one (its newlines escaped, so it stays one line
    for the log collector)."""

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": None if request_id in (None, "-") else request_id,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def logging_config(*, log_format: str, level: str) -> dict:
    """The LOGGING setting: everything to stdout, as JSON lines or as text, with request ids."""
    if log_format not in {"json", "text"}:
        raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, got {log_format!r}.")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "alem.observability.RequestIdFilter"}},
        "formatters": {
            "json": {"()": "alem.observability.JsonFormatter"},
            "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "filters": ["request_id"],
                "formatter": log_format,
            }
        },
        "root": {"handlers": ["console"], "level": level},
    }


# ---------------------------------------------------------------------------------------------
# Celery: the id travels in the task's headers
# ---------------------------------------------------------------------------------------------

# Tokens to restore the context variable after each task, by task id.
_task_tokens: dict[str, Token] = {}


def task_publish_add_request_id(headers=None, **kwargs):
    """``before_task_publish``: the current request's id goes with the task."""
    request_id = request_id_var.get()
    if request_id and headers is not None:
        headers[TASK_HEADER] = request_id


def task_prerun_set_request_id(task_id=None, task=None, **kwargs):
    """``task_prerun``: the task's lines carry the id of the request that queued it; a task
    queued by no request (the schedule) is known by its own task id. Run in place (eager), a
    task keeps the caller's id."""
    request = getattr(task, "request", None)
    carried = getattr(request, TASK_HEADER, None) or (getattr(request, "headers", None) or {}).get(
        TASK_HEADER
    )
    request_id = request_id_from(carried) if carried else (request_id_var.get() or task_id)
    if task_id:
        _task_tokens[task_id] = request_id_var.set(request_id)


def task_postrun_reset_request_id(task_id=None, **kwargs):
    """``task_postrun``: the worker forgets the id before its next task."""
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is not None:
        try:
            request_id_var.reset(token)
        except ValueError:  # set in another context (a pool that switches them): just clear
            request_id_var.set(None)


# ---------------------------------------------------------------------------------------------
# Sentry
# ---------------------------------------------------------------------------------------------


def _tag_request_id(event, hint):
    request_id = request_id_var.get()
    if request_id:
        event.setdefault("tags", {})["request_id"] = request_id
    return event


def sentry_init(*, dsn: str, environment: str, release: str | None) -> None:
    """Report errors of the web app and the worker to Sentry, with nothing personal: no user,
    address or cookies (``send_default_pii`` off), no request bodies (sign-in forms, one-time
    codes), no local variables of the failing frames (they may hold keys or tokens)."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release or None,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        traces_sample_rate=0.0,
        before_send=_tag_request_id,
    )
