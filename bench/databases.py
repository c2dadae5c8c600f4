"""What the benchmarks share: one child process per database (Django is configured once per
process), a throwaway SQLite file and a scratch PostgreSQL database."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
        raise SystemExit(f"benchmark on {database_url} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _recreate_postgres(server_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url.rstrip('/')}/{name}"


def _drop_postgres(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-postgres``, ``--postgres-url`` and the hidden ``--child`` of every benchmark."""
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--postgres-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)


def run_on_each_database(
    script: str, args: list[str], cli: argparse.Namespace, *, scratch_name: str, **env: str
) -> list[tuple[str, dict]]:
    """``script``'s child on a throwaway SQLite file, then, unless ``--no-postgres``, on the
    scratch PostgreSQL database ``scratch_name`` (dropped and created again, dropped after)."""
    with tempfile.TemporaryDirectory() as tmp:
        results = [("SQLite", run_child(script, args, f"sqlite:///{tmp}/bench.sqlite3", **env))]
    if not cli.no_postgres:
        url = _recreate_postgres(cli.postgres_url, scratch_name)
        try:
            results.append(("PostgreSQL", run_child(script, args, url, **env)))
        finally:
            _drop_postgres(cli.postgres_url, scratch_name)
    return results
