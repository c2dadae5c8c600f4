"""What the benchmarks share: one child process per database (Django is configured once per
process) and a scratch PostgreSQL database."""

import json
import os
import subprocess
import sys
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


def recreate_postgres(server_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        db.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url.rstrip('/')}/{name}"


def drop_postgres(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as db:
        db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
