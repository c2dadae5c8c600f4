"""What the benchmarks share: one child process on a scratch database (Django is configured once
per process), on the PostgreSQL server that DATABASE_URL names: the embedded one under
``make bench`` (embedded_db.py), or any other.

Also the databases the real-size benchmark keeps between runs (``bench/dataset.py``): created,
cloned from a template, labelled with a comment, dropped; and the production-like environment
(DEBUG off, throwaway keys) its server and children run under."""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var" / "bench"

# Database names the benchmarks create: plain identifiers, so they need no quoting rules.
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def run_child(
    script: str, args: list[str], database_url: str, *, show_progress: bool = False, **env: str
) -> dict:
    """Run ``script --child ARGS`` on ``database_url`` and return the JSON of its last line.

    ``show_progress``: the child's stderr goes to the terminal as it runs (its progress lines)
    instead of being kept for the error message."""
    result = subprocess.run(
        [sys.executable, script, "--child", *args],
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "alem.settings",
            "DEBUG": "1",
            "DATABASE_URL": database_url,
            "REDIS_URL": "",
            "LOG_LEVEL": "WARNING",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=None if show_progress else subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = "(its output is above)" if show_progress else result.stderr[-4000:]
        raise SystemExit(f"benchmark failed:\n{detail}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _server_sql(server_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(_with_database(server_url, "postgres"), autocommit=True) as db:
        cursor = db.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def _with_database(url: str, name: str) -> str:
    """``url`` with its database name replaced (the path of a postgres:// URL)."""
    head, _, _ = url.partition("?")[0].rpartition("/")
    return f"{head}/{name}"


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """The hidden ``--child`` of every benchmark."""
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def server_url() -> str:
    """DATABASE_URL, once it is known to name a PostgreSQL server."""
    url = os.environ.get("DATABASE_URL")
    if not url or not dj_database_url.parse(url)["ENGINE"].endswith("postgresql"):
        raise SystemExit(
            "The benchmarks need DATABASE_URL to name a PostgreSQL server: run them with "
            "`make bench` (the embedded server) or set DATABASE_URL=postgres://..."
        )
    return url


def database_url(name: str) -> str:
    """The URL of database ``name`` on the server of DATABASE_URL."""
    return _with_database(server_url(), _checked(name))


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise SystemExit(f"{name!r} is not a database name the benchmarks use (a-z, 0-9, _).")
    return name


def database_drop(name: str) -> None:
    _server_sql(server_url(), f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')


def database_create(name: str, *, template: str | None = None) -> None:
    """Create ``name`` (dropping any database of that name first), empty or as a copy of
    ``template``. A file copy: faster than the default WAL-logged copy for a large template,
    and the template must have no connections while it runs."""
    database_drop(name)
    sql = f'CREATE DATABASE "{_checked(name)}"'
    if template is not None:
        sql += f' TEMPLATE "{_checked(template)}" STRATEGY FILE_COPY'
    _server_sql(server_url(), sql)


def database_label(name: str) -> dict | None:
    """The JSON label (``COMMENT ON DATABASE``) of ``name``; None if it has none or does not
    exist. A comment, unlike a table, is not copied into a database cloned from it."""
    rows = _server_sql(
        server_url(),
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        (_checked(name),),
    )
    if not rows or not rows[0][0]:
        return None
    try:
        return json.loads(rows[0][0])
    except ValueError:
        return None


def database_set_label(name: str, label: dict) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_with_database(server_url(), "postgres"), autocommit=True) as db:
        db.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(_checked(name)), sql.Literal(json.dumps(label))
            )
        )


def run_on_scratch_database(script: str, args: list[str], *, scratch_name: str, **env: str) -> dict:
    """``script``'s child on the scratch database ``scratch_name`` (dropped and created again,
    dropped after) on the server of DATABASE_URL."""
    database_create(scratch_name)
    try:
        return run_child(script, args, database_url(scratch_name), **env)
    finally:
        database_drop(scratch_name)


# ---------------------------------------------------------------------------------------------
# The production-like environment of the real-size benchmark
# ---------------------------------------------------------------------------------------------

# Throwaway values, like deploy/build-time.env's: DEBUG off needs them. The dataset is built and
# served under the same keys, because the authenticators' secrets are encrypted under
# ALEM_SECRETS_KEY and the audit chain is keyed by ALEM_AUDIT_KEY.
THROWAWAY_KEYS = {
    "SECRET_KEY": "bench-only-not-a-secret-0123456789abcdefghijklmnopqrstuvwxyz",
    "ALEM_SECRETS_KEY": "YmVuY2gtb25seS1ub3QtYS1zZWNyZXQtMDEyMzQ1Njc=",
    "ALEM_AUDIT_KEY": "bench-only-not-a-secret-0123456789abcdef",
    # Signs the audit checkpoints the public pages list (raw Ed25519 key, 64 hex characters).
    "ALEM_CHECKPOINT_KEY": "be" * 32,
}


def production_env(database: str, *, broker_url: str = "memory://") -> dict[str, str]:
    """The environment of Alem with DEBUG off on database ``database`` over plain HTTP
    (SECURE_COOKIES=0), with the benchmark's settings (bench/settings.py: the project's plus
    the bare yardstick views). E-mails go to files under var/bench; the tasks a change queues
    go to ``broker_url``, by default Celery's in-memory transport, where nothing consumes them
    (never a shared Redis, whose workers would run them against another database)."""
    return {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DEBUG": "0",
        **THROWAWAY_KEYS,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url(database),
        "REDIS_URL": broker_url,
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(VAR_DIR / "sent-mail"),
        "SECURE_COOKIES": "0",
        "STATIC_ROOT": str(VAR_DIR / "static"),
        "LOG_LEVEL": "WARNING",
    }
