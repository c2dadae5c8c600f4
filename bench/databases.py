"""What the benchmarks share: one child process on a scratch database (Django is configured once
per process), on the PostgreSQL server that DATABASE_URL names: the embedded one under
``make bench`` (embedded_db.py), or any other."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def run_child(script: str, args: list[str], database_url: str, **env: str) -> dict:
    """Run ``script --child ARGS`` on ``database_url`` and return the JSON of its last line."""
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
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _server_sql(server_url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(_with_database(server_url, "postgres"), autocommit=True) as db:
        db.execute(sql)


def _with_database(url: str, name: str) -> str:
    """``url`` with its database name replaced (the path of a postgres:// URL)."""
    head, _, _ = url.partition("?")[0].rpartition("/")
    return f"{head}/{name}"


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """The hidden ``--child`` of every benchmark."""
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def run_on_scratch_database(script: str, args: list[str], *, scratch_name: str, **env: str) -> dict:
    """``script``'s child on the scratch database ``scratch_name`` (dropped and created again,
    dropped after) on the server of DATABASE_URL."""
    server_url = os.environ.get("DATABASE_URL")
    if not server_url or not dj_database_url.parse(server_url)["ENGINE"].endswith("postgresql"):
        raise SystemExit(
            "The benchmarks need DATABASE_URL to name a PostgreSQL server: run them with "
            "`make bench` (the embedded server) or set DATABASE_URL=postgres://..."
        )
    _server_sql(server_url, f'DROP DATABASE IF EXISTS "{scratch_name}" WITH (FORCE)')
    _server_sql(server_url, f'CREATE DATABASE "{scratch_name}"')
    try:
        return run_child(script, args, _with_database(server_url, scratch_name), **env)
    finally:
        _server_sql(server_url, f'DROP DATABASE IF EXISTS "{scratch_name}" WITH (FORCE)')
