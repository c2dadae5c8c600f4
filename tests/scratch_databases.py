"""Databases of their own, on the server the suite runs on, for the processes a test starts.

A process the test starts (a Celery worker, ``manage.py`` commands, the production stack)
cannot see the test database: its rows live in the test's uncommitted transaction. Such a test
creates a scratch database beside it instead, on the same PostgreSQL server (the embedded one
under ``make test``, whatever DATABASE_URL names otherwise), reaches it with ``url`` and drops
it afterwards.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
from django.conf import settings


def connection_params(name: str) -> dict:
    """psycopg's parameters for database ``name`` on the suite's server."""
    server = settings.DATABASES["default"]
    params = {"dbname": name, "autocommit": True}
    for key, setting in (("host", "HOST"), ("port", "PORT"), ("user", "USER")):
        if server.get(setting):
            params[key] = str(server[setting])
    if server.get("PASSWORD"):
        params["password"] = server["PASSWORD"]
    return params


def url(name: str) -> str:
    """A DATABASE_URL for database ``name`` on the suite's server. A Unix socket's directory
    is percent-encoded in the host, as dj-database-url and libpq read it."""
    server = settings.DATABASES["default"]
    password = f":{quote(server['PASSWORD'], safe='')}" if server.get("PASSWORD") else ""
    host = quote(str(server.get("HOST") or "localhost"), safe="")
    port = f":{server['PORT']}" if server.get("PORT") else ""
    return f"postgres://{quote(server.get('USER') or '', safe='')}{password}@{host}{port}/{name}"


def server_sql(sql: str) -> None:
    """Run one statement outside any database transaction (CREATE or DROP DATABASE)."""
    with psycopg.connect(**connection_params("postgres")) as db:
        db.execute(sql)


def rows(name: str, sql: str, params: tuple = ()) -> list[tuple]:
    """What ``sql`` selects in database ``name``."""
    with psycopg.connect(**connection_params(name)) as db:
        return db.execute(sql, params).fetchall()


def count(name: str, sql: str) -> int:
    return rows(name, sql)[0][0]


@contextmanager
def scratch_database(name: str, *, template: str | None = None) -> Iterator[str]:
    """Create database ``name`` (a copy of ``template`` if given), yield its URL, drop it."""
    server_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    server_sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield url(name)
    finally:
        server_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
