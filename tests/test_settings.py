"""Settings come from the environment, and production mode refuses an insecure configuration.

Each case runs a fresh interpreter, because settings are read once at import.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from alem.settings import DEVELOPMENT_SECRET_KEY

BASE_DIR = Path(__file__).resolve().parent.parent
LONG_KEY = "k3y-" + "x" * 60
# Variables the settings read; each case starts from none of them.
SETTINGS_VARIABLES = ("SECRET_KEY", "DEBUG", "DATABASE_URL", "ALLOWED_HOSTS", "REDIS_URL")

SHOW_SETTINGS = """
import json, django
django.setup()
from django.conf import settings

from alem.settings import DEVELOPMENT_SECRET_KEY
db = settings.DATABASES["default"]
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "ENGINE": db["ENGINE"], "NAME": str(db["NAME"]), "USER": db.get("USER"),
    "PASSWORD": db.get("PASSWORD"), "HOST": db.get("HOST"), "PORT": db.get("PORT"),
    "TIME_ZONE": settings.TIME_ZONE, "USE_TZ": settings.USE_TZ,
    "ALLOWED_HOSTS": settings.ALLOWED_HOSTS,
}))
"""


def run(args: list[str], tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    env.update(DJANGO_SETTINGS_MODULE="alem.settings", ALEM_VAR_DIR=str(tmp_path), **variables)
    return subprocess.run(
        [sys.executable, *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def show_settings(tmp_path: Path, **variables: str) -> dict:
    result = run(["-c", SHOW_SETTINGS], tmp_path, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "variables",
    [
        {"DEBUG": "0"},
        {},  # DEBUG defaults to off
        {"DEBUG": "0", "SECRET_KEY": "too-short-a-key"},
        {"DEBUG": "0", "SECRET_KEY": DEVELOPMENT_SECRET_KEY},
    ],
    ids=["debug-off-no-key", "no-debug-no-key", "short-key", "development-key"],
)
def test_production_mode_refuses_to_start_without_a_real_secret_key(tmp_path, variables):
    result = run(["manage.py", "check"], tmp_path, **variables)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "Refusing to start with DEBUG off on the development SECRET_KEY" in result.stderr


def run_bare(command: list[str], **variables: str) -> subprocess.CompletedProcess:
    """``manage.py command`` as a git hook or cron runs it: nothing in the environment but PATH
    and HOME (and ``variables``)."""
    return subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=BASE_DIR,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(Path.home()),
            **variables,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [["migrate", "--plan"], ["showmigrations"], ["check"]],
    ids=["migrate", "showmigrations", "check"],
)
def test_every_command_names_the_refused_configuration_in_a_bare_environment(command):
    # Django's runner swallows a settings error on its first look and, depending on the order of
    # its system checks, can then fail with "Models aren't loaded yet" instead; manage.py reads
    # the settings first so the refusal itself is shown.
    result = run_bare(command)

    assert result.returncode != 0
    assert "AppRegistryNotReady" not in result.stderr
    assert "Refusing to start with DEBUG off on the development SECRET_KEY" in result.stderr


def test_the_migration_check_runs_in_a_bare_environment(tmp_path):
    # It only compares the models with the migration files: nothing served, nothing signed.
    result = run_bare(["makemigrations", "--check", "--dry-run"], ALEM_VAR_DIR=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "No changes detected" in result.stdout


def test_the_migration_check_still_refuses_an_explicit_debug_off_without_a_key(tmp_path):
    result = run_bare(
        ["makemigrations", "--check", "--dry-run"], DEBUG="0", ALEM_VAR_DIR=str(tmp_path)
    )

    assert result.returncode != 0
    assert "Refusing to start with DEBUG off on the development SECRET_KEY" in result.stderr


def test_production_mode_starts_with_a_long_secret_key(tmp_path):
    result = run(["manage.py", "check"], tmp_path, DEBUG="0", SECRET_KEY=LONG_KEY)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_development_mode_starts_on_the_development_key(tmp_path):
    values = show_settings(tmp_path, DEBUG="1")

    assert values["DEBUG"] is True
    assert values["ALLOWED_HOSTS"] == ["127.0.0.1", "localhost"]


def test_a_malformed_debug_value_is_refused(tmp_path):
    result = run(["manage.py", "check"], tmp_path, DEBUG="maybe", SECRET_KEY=LONG_KEY)

    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr


def test_database_url_points_at_postgresql(tmp_path):
    values = show_settings(
        tmp_path,
        DEBUG="0",
        SECRET_KEY=LONG_KEY,
        DATABASE_URL="postgres://alem:s3cret@db.internal:6543/alem_prod",
        ALLOWED_HOSTS="alem.example, api.alem.example",
    )

    assert values["ENGINE"] == "django.db.backends.postgresql"
    assert (values["NAME"], values["USER"], values["PASSWORD"]) == ("alem_prod", "alem", "s3cret")
    assert (values["HOST"], str(values["PORT"])) == ("db.internal", "6543")
    assert values["ALLOWED_HOSTS"] == ["alem.example", "api.alem.example"]


def test_without_database_url_the_database_is_sqlite_under_var(tmp_path):
    values = show_settings(tmp_path, DEBUG="1")

    assert values["ENGINE"] == "django.db.backends.sqlite3"
    assert values["NAME"] == str(tmp_path / "alem.sqlite3")


def test_time_is_kept_in_almaty_and_timezone_aware():
    assert settings.TIME_ZONE == "Asia/Almaty"
    assert settings.USE_TZ is True


def test_money_precision_is_set_in_one_place():
    assert settings.ALEM_DECIMALS["quantity"] == (38, 18)
    assert settings.ALEM_DECIMALS["money"][1] == 2
