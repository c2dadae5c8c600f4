"""Settings come from the environment, and production mode refuses an insecure configuration.

Each case runs a fresh interpreter, because settings are read once at import.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from alem.settings import DEVELOPMENT_SECRET_KEY

BASE_DIR = Path(__file__).resolve().parent.parent
LONG_KEY = "k3y-" + "x" * 60
# Variables the settings read; each case starts from none of them.
SETTINGS_VARIABLES = (
    "SECRET_KEY",
    "DEBUG",
    "DATABASE_URL",
    "ALLOWED_HOSTS",
    "REDIS_URL",
    "SECURE_COOKIES",
    "SECURE_HSTS_SECONDS",
    "SECURE_PROXY_SSL_HEADER",
    "ALEM_SECRETS_KEY",
    "ALEM_AUDIT_KEY",
    "ALEM_CHECKPOINT_KEY",
    "ALEM_CHECKPOINT_KEY_FILE",
    "EMAIL_HOST",
    "EMAIL_BACKEND",
    "EMAIL_FILE_PATH",
    "CSRF_TRUSTED_ORIGINS",
    "ALEM_TRUSTED_PROXIES",
    "ALEM_TESTS_ONLY_EMBEDDED_SERVICES",
)
# A production environment: DEBUG off, a real key, one host name, PostgreSQL, Redis and an SMTP
# server (named only: nothing here connects to them).
PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": LONG_KEY,
    "ALLOWED_HOSTS": "alem.example",
    "DATABASE_URL": "postgres://alem:s3cret@127.0.0.1:1/alem",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "EMAIL_HOST": "smtp.alem.example",
    "ALEM_SECRETS_KEY": "c2VjcmV0cy1rZXktZm9yLXNldHRpbmdzLXRlc3RzLTA=",
    "ALEM_AUDIT_KEY": "audit-key-for-settings-tests-0123456789",
    "ALEM_CHECKPOINT_KEY": "-----BEGIN PRIVATE KEY-----\\n"
    "MC4CAQAwBQYDK2VwBCIEIMXMYqM9Gwy69P/CCyYREvcuJM0GvAWcI+d76YVDgOf0\\n"
    "-----END PRIVATE KEY-----\\n",
}
# Every variable production cannot start without, in the order the refusal names them.
REQUIRED = [
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "EMAIL_HOST",
    "ALEM_SECRETS_KEY",
    "ALEM_AUDIT_KEY",
    "ALEM_CHECKPOINT_KEY",
]
# The production environment README.md documents behind its TLS proxy (one nginx).
DOCUMENTED_PRODUCTION = {
    **PRODUCTION,
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "CSRF_TRUSTED_ORIGINS": "https://alem.example",
    "ALEM_TRUSTED_PROXIES": "1",
}

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
    "SECURE_SSL_REDIRECT": settings.SECURE_SSL_REDIRECT,
    "SECURE_HSTS_SECONDS": settings.SECURE_HSTS_SECONDS,
    "SESSION_COOKIE_SECURE": settings.SESSION_COOKIE_SECURE,
    "CSRF_COOKIE_SECURE": settings.CSRF_COOKIE_SECURE,
}))
"""

# The sign-in page asked for over plain HTTP, over HTTPS, and over plain HTTP from a proxy that
# says the browser used HTTPS; with the project's middleware, as a server would answer.
ASK_OVER_HTTP_AND_HTTPS = """
import json, django
django.setup()
from django.test import Client
from django.test.utils import override_settings

# The page's {% static %} names, without the collectstatic manifest production serves from.
override_settings(STORAGES={
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}).enable()

def answer(response):
    return {
        "status": response.status_code,
        "location": response.get("Location"),
        "hsts": response.get("Strict-Transport-Security"),
        "secure_cookies": {name: bool(c["secure"]) for name, c in response.cookies.items()},
    }

client = Client(HTTP_HOST="alem.example")
print(json.dumps({
    "http": answer(client.get("/accounts/login/")),
    "https": answer(client.get("/accounts/login/", secure=True)),
    "proxied_https": answer(client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")),
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


def show_settings(tmp_path: Path, script: str = SHOW_SETTINGS, **variables: str) -> dict:
    result = run(["-c", script], tmp_path, **variables)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def refused(result: subprocess.CompletedProcess) -> list[str]:
    """The variables a refusal to start names, in its order; [] when it named none."""
    found = re.search(r"Refusing to start with DEBUG off without (.+):\n", result.stderr)
    return found.group(1).split(", ") if found else []


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
    assert "SECRET_KEY" in refused(result)
    assert "  - SECRET_KEY: a random value of at least 32 characters" in result.stderr


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
    assert refused(result) == REQUIRED


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
    assert "SECRET_KEY" in refused(result)


def test_production_mode_starts_with_a_long_secret_key(tmp_path):
    result = run(["manage.py", "check"], tmp_path, **PRODUCTION)

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
        **{
            **PRODUCTION,
            "DATABASE_URL": "postgres://alem:s3cret@db.internal:6543/alem_prod",
            "ALLOWED_HOSTS": "alem.example, api.alem.example",
        },
    )

    assert values["ENGINE"] == "django.db.backends.postgresql"
    assert (values["NAME"], values["USER"], values["PASSWORD"]) == ("alem_prod", "alem", "s3cret")
    assert (values["HOST"], str(values["PORT"])) == ("db.internal", "6543")
    assert values["ALLOWED_HOSTS"] == ["alem.example", "api.alem.example"]


def test_without_database_url_every_use_of_the_database_says_how_to_get_one(tmp_path):
    result = run(["manage.py", "migrate", "--no-input"], tmp_path, DEBUG="1")

    assert result.returncode != 0
    assert "No database: DATABASE_URL is not set" in result.stderr
    assert "embedded_db.py -- COMMAND" in result.stderr
    assert "DATABASE_URL=postgres://" in result.stderr


def test_commands_that_need_no_database_run_without_database_url(tmp_path):
    result = run(["manage.py", "check"], tmp_path, DEBUG="1")

    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "url", ["sqlite:///alem.sqlite3", "mysql://alem:s3cret@127.0.0.1/alem"], ids=["sqlite", "mysql"]
)
def test_a_database_other_than_postgresql_is_refused(tmp_path, url):
    result = run(["manage.py", "check"], tmp_path, DEBUG="1", DATABASE_URL=url)

    assert result.returncode != 0
    assert "DATABASE_URL must point at PostgreSQL" in result.stderr
    assert "s3cret" not in result.stderr


def test_time_is_kept_in_almaty_and_timezone_aware():
    assert settings.TIME_ZONE == "Asia/Almaty"
    assert settings.USE_TZ is True


def test_money_precision_is_set_in_one_place():
    assert settings.ALEM_DECIMALS["quantity"] == (38, 18)
    assert settings.ALEM_DECIMALS["money"][1] == 2


# ---------------------------------------------------------------------------------------------
# HTTPS only in production
# ---------------------------------------------------------------------------------------------


def test_production_redirects_plain_http_to_https(tmp_path):
    answers = show_settings(tmp_path, ASK_OVER_HTTP_AND_HTTPS, **PRODUCTION)

    assert answers["http"]["status"] == 301
    assert answers["http"]["location"] == "https://alem.example/accounts/login/"


def test_production_answers_over_https_with_hsts_for_a_year_and_secure_cookies(tmp_path):
    answers = show_settings(tmp_path, ASK_OVER_HTTP_AND_HTTPS, **PRODUCTION)

    https = answers["https"]
    assert https["status"] == 200
    assert https["hsts"] == "max-age=31536000; includeSubDomains"
    assert https["secure_cookies"] == {"csrftoken": True}


def test_the_hsts_lifetime_comes_from_the_environment(tmp_path):
    answers = show_settings(
        tmp_path, ASK_OVER_HTTP_AND_HTTPS, **PRODUCTION, SECURE_HSTS_SECONDS="63072000"
    )

    assert answers["https"]["hsts"] == "max-age=63072000; includeSubDomains"


def test_behind_a_tls_proxy_the_proxys_header_says_the_request_was_https(tmp_path):
    without_header = show_settings(tmp_path, ASK_OVER_HTTP_AND_HTTPS, **PRODUCTION)
    with_header = show_settings(
        tmp_path, ASK_OVER_HTTP_AND_HTTPS, **PRODUCTION, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto"
    )

    # Unless it is configured, the header is not trusted: a client could send it.
    assert without_header["proxied_https"]["status"] == 301
    assert with_header["proxied_https"]["status"] == 200
    assert with_header["proxied_https"]["hsts"] == "max-age=31536000; includeSubDomains"


@pytest.mark.parametrize("warning", ["W004", "W008", "W012", "W016"])
def test_the_deployment_check_finds_no_https_warning_in_production(tmp_path, warning):
    result = run(["manage.py", "check", "--deploy"], tmp_path, **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert f"security.{warning}" not in result.stdout + result.stderr


def test_the_deployment_check_is_clean_in_the_documented_production_environment(tmp_path):
    result = run(["manage.py", "check", "--deploy"], tmp_path, **DOCUMENTED_PRODUCTION)

    assert result.returncode == 0, result.stderr
    # HSTS preload is off on purpose and its warning silenced (alem/settings.py, Security).
    assert re.findall(r"\(([\w.]+)\)", result.stderr + result.stdout) == []
    assert "System check identified no issues (1 silenced)." in result.stdout + result.stderr


def test_development_serves_plain_http(tmp_path):
    values = show_settings(tmp_path, DEBUG="1")

    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False


def test_production_mode_serves_plain_http_only_when_told_to(tmp_path):
    # As the tests do (tests/settings.py): nothing redirected, no HSTS, cookies over plain HTTP.
    values = show_settings(tmp_path, **PRODUCTION, SECURE_COOKIES="0")

    assert values["SECURE_SSL_REDIRECT"] is False
    assert values["SECURE_HSTS_SECONDS"] == 0
    assert values["SESSION_COOKIE_SECURE"] is False
    assert values["CSRF_COOKIE_SECURE"] is False
    assert settings.SECURE_SSL_REDIRECT is False


def test_production_mode_refuses_to_start_without_the_secrets_key(tmp_path):
    variables = {k: v for k, v in PRODUCTION.items() if k != "ALEM_SECRETS_KEY"}

    result = run(["manage.py", "check"], tmp_path, **variables)

    assert result.returncode != 0
    assert "without ALEM_SECRETS_KEY:" in result.stderr
    assert "the key that encrypts authenticator secrets" in result.stderr


def test_production_mode_refuses_to_start_without_the_audit_key(tmp_path):
    variables = {k: v for k, v in PRODUCTION.items() if k != "ALEM_AUDIT_KEY"}

    result = run(["manage.py", "check"], tmp_path, **variables)

    assert result.returncode != 0
    assert "without ALEM_AUDIT_KEY:" in result.stderr
    assert "the key of the audit chain's HMAC, at least 32 characters" in result.stderr


def test_production_mode_refuses_anchoring_without_the_accounts_key(tmp_path):
    result = run(
        ["manage.py", "check"], tmp_path, **PRODUCTION, ALEM_ANCHOR_RPC_URL="https://bsc.example"
    )

    assert result.returncode != 0
    assert "without ALEM_ANCHOR_ACCOUNT_KEY_FILE:" in result.stderr
    assert "since ALEM_ANCHOR_RPC_URL turns anchoring on" in result.stderr


# ---------------------------------------------------------------------------------------------
# Fail closed in production: every required variable, named all at once
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", REQUIRED)
def test_production_mode_refuses_to_start_without_each_required_variable(tmp_path, variable):
    variables = {k: v for k, v in PRODUCTION.items() if k != variable}

    result = run(["manage.py", "check"], tmp_path, **variables)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert refused(result) == [variable]
    assert f"  - {variable}: " in result.stderr
    assert "or set DEBUG=1 for local development." in result.stderr


def test_production_mode_names_every_missing_variable_in_one_refusal(tmp_path):
    result = run(["manage.py", "check"], tmp_path, DEBUG="0")

    assert result.returncode != 0
    assert refused(result) == REQUIRED
    assert result.stderr.count("Refusing to start") == 1
    assert 'Set them in the environment (README.md, "Production settings")' in result.stderr


def test_a_short_audit_key_is_refused_as_missing(tmp_path):
    result = run(["manage.py", "check"], tmp_path, **{**PRODUCTION, "ALEM_AUDIT_KEY": "short"})

    assert refused(result) == ["ALEM_AUDIT_KEY"]


def test_production_mode_starts_without_email_host_on_an_explicit_file_backend(tmp_path):
    variables = {k: v for k, v in PRODUCTION.items() if k != "EMAIL_HOST"}
    backend = "django.core.mail.backends.filebased.EmailBackend"
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.EMAIL_BACKEND, settings.EMAIL_FILE_PATH)"
    )

    result = run(
        ["-c", script],
        tmp_path,
        **variables,
        EMAIL_BACKEND=backend,
        EMAIL_FILE_PATH=str(tmp_path / "mail"),
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [backend, str(tmp_path / "mail")]


@pytest.mark.parametrize("backend", ["console", "locmem", "dummy"])
def test_production_mode_refuses_an_email_backend_that_delivers_nothing(tmp_path, backend):
    result = run(
        ["manage.py", "check"],
        tmp_path,
        **PRODUCTION,
        EMAIL_BACKEND=f"django.core.mail.backends.{backend}.EmailBackend",
    )

    assert refused(result) == ["EMAIL_BACKEND"]


def test_production_mode_sends_by_smtp_through_email_host(tmp_path):
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.EMAIL_BACKEND, settings.EMAIL_HOST)"
    )

    result = run(["-c", script], tmp_path, **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.core.mail.backends.smtp.EmailBackend",
        "smtp.alem.example",
    ]


def test_the_tests_only_switch_allows_the_embedded_services_and_nothing_else(tmp_path):
    # What tests/settings.py relies on when CI's first pass gives no REDIS_URL.
    embedded = {k: v for k, v in PRODUCTION.items() if k not in {"REDIS_URL", "EMAIL_HOST"}}
    values = show_settings(tmp_path, **embedded, ALEM_TESTS_ONLY_EMBEDDED_SERVICES="1")
    still_refused = run(
        ["manage.py", "check"], tmp_path, DEBUG="0", ALEM_TESTS_ONLY_EMBEDDED_SERVICES="1"
    )

    assert values["DEBUG"] is False
    assert values["ENGINE"] == "django.db.backends.postgresql"
    assert refused(still_refused) == [
        "SECRET_KEY",
        "ALLOWED_HOSTS",
        "DATABASE_URL",
        "ALEM_SECRETS_KEY",
        "ALEM_AUDIT_KEY",
        "ALEM_CHECKPOINT_KEY",
    ]


def test_the_test_settings_turn_on_the_tests_only_switch():
    assert settings.TESTS_ONLY_EMBEDDED_SERVICES is True
    assert settings.DEBUG is False


# ---------------------------------------------------------------------------------------------
# Behind TLS and trusted proxies
# ---------------------------------------------------------------------------------------------

SHOW_PROXY_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({
    "CSRF_TRUSTED_ORIGINS": settings.CSRF_TRUSTED_ORIGINS,
    "ALEM_TRUSTED_PROXIES": settings.ALEM_TRUSTED_PROXIES,
    "NUM_PROXIES": settings.REST_FRAMEWORK["NUM_PROXIES"],
    "AXES_CLIENT_IP_CALLABLE": settings.AXES_CLIENT_IP_CALLABLE,
}))
"""


def test_trusted_origins_and_proxies_come_from_the_environment(tmp_path):
    values = show_settings(
        tmp_path,
        SHOW_PROXY_SETTINGS,
        **PRODUCTION,
        CSRF_TRUSTED_ORIGINS="https://alem.example, https://api.alem.example",
        ALEM_TRUSTED_PROXIES="2",
    )

    assert values == {
        "CSRF_TRUSTED_ORIGINS": ["https://alem.example", "https://api.alem.example"],
        "ALEM_TRUSTED_PROXIES": 2,
        "NUM_PROXIES": 2,
        "AXES_CLIENT_IP_CALLABLE": "alem.client_address.client_address",
    }


def test_by_default_no_proxy_is_trusted(tmp_path):
    values = show_settings(tmp_path, SHOW_PROXY_SETTINGS, **PRODUCTION)

    assert values["CSRF_TRUSTED_ORIGINS"] == []
    # 0, not DRF's default None, which would key throttles on the whole X-Forwarded-For.
    assert (values["ALEM_TRUSTED_PROXIES"], values["NUM_PROXIES"]) == (0, 0)


@pytest.mark.parametrize("value", ["-1", "one", "1.5"])
def test_a_malformed_number_of_trusted_proxies_is_refused(tmp_path, value):
    result = run(["manage.py", "check"], tmp_path, **PRODUCTION, ALEM_TRUSTED_PROXIES=value)

    assert result.returncode != 0
    assert "ALEM_TRUSTED_PROXIES must be the number of reverse proxies" in result.stderr
