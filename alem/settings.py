"""Settings for Alem, read from the environment.

Development defaults are safe to run on a laptop (the embedded PostgreSQL that the Makefile
starts, and Celery's filesystem broker under ``var/``). With ``DEBUG`` off the project refuses
to start on an insecure or incomplete configuration, naming every variable it misses (the
Security section).
"""

import json
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from alem.observability import logging_config, sentry_init

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ALEM_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}.")


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# ---------------------------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------------------------

DEVELOPMENT_SECRET_KEY = "django-insecure-alem-development-key-do-not-use-in-production"

DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = os.environ.get("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])

# FOR THE TEST SUITE ONLY, never for a deployment: tests/settings.py sets it so that the tests,
# which run with DEBUG off, may still use the embedded services when CI's first pass gives no
# REDIS_URL (the filesystem broker under var/, e-mails kept in memory by Django's test runner).
# It relaxes nothing else: DATABASE_URL, the keys and ALLOWED_HOSTS stay required.
TESTS_ONLY_EMBEDDED_SERVICES = env_bool("ALEM_TESTS_ONLY_EMBEDDED_SERVICES", default=False)

# E-mail backends that deliver nothing: refused with DEBUG off, where a decider's notification
# must reach them (the e-mail section below picks the backend).
MAIL_DISCARDING_BACKENDS = {
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
}

if not DEBUG:
    # Production fails closed: every missing or unusable variable is named in one error, so an
    # operator fixes the environment once instead of once per variable, and nothing falls back
    # to the folder broker or the console e-mail backend.
    refused: dict[str, str] = {}
    if SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 32:
        refused["SECRET_KEY"] = (
            "a random value of at least 32 characters (the development key is refused)"
        )
    if not ALLOWED_HOSTS:
        refused["ALLOWED_HOSTS"] = "the host names the site answers to, comma-separated"
    if not os.environ.get("DATABASE_URL"):
        refused["DATABASE_URL"] = "the PostgreSQL server, postgres://USER:PASSWORD@HOST:PORT/NAME"
    if not TESTS_ONLY_EMBEDDED_SERVICES:
        if not os.environ.get("REDIS_URL"):
            refused["REDIS_URL"] = "the Celery broker, redis://HOST:6379/0"
        if os.environ.get("EMAIL_BACKEND") in MAIL_DISCARDING_BACKENDS:
            refused["EMAIL_BACKEND"] = (
                "a backend that delivers (SMTP or file), not one that discards"
            )
        elif not os.environ.get("EMAIL_HOST") and not os.environ.get("EMAIL_BACKEND"):
            refused["EMAIL_HOST"] = (
                "the SMTP server notifications go out through (or an explicit EMAIL_BACKEND, "
                "e.g. django.core.mail.backends.filebased.EmailBackend with EMAIL_FILE_PATH)"
            )
    if not os.environ.get("ALEM_SECRETS_KEY"):
        refused["ALEM_SECRETS_KEY"] = (
            "the key that encrypts authenticator secrets, 32 random bytes in URL-safe base64"
        )
    if len(os.environ.get("ALEM_AUDIT_KEY", "")) < 32:
        refused["ALEM_AUDIT_KEY"] = (
            "the key of the audit chain's HMAC, at least 32 characters, never changed once used"
        )
    checkpoint_key_file = os.environ.get("ALEM_CHECKPOINT_KEY_FILE", "")
    if not os.environ.get("ALEM_CHECKPOINT_KEY") and not (
        checkpoint_key_file and os.path.isfile(checkpoint_key_file)
    ):
        refused["ALEM_CHECKPOINT_KEY"] = (
            "the Ed25519 private key that signs audit checkpoints (64 hex characters or a PEM), or "
            "ALEM_CHECKPOINT_KEY_FILE naming a readable PEM file"
        )
    if os.environ.get("ALEM_ANCHOR_RPC_URL") and not os.environ.get("ALEM_ANCHOR_ACCOUNT_KEY_FILE"):
        refused["ALEM_ANCHOR_ACCOUNT_KEY_FILE"] = (
            "the file holding the anchoring account's hex private key, since "
            "ALEM_ANCHOR_RPC_URL turns anchoring on"
        )
    if refused:
        raise ImproperlyConfigured(
            f"Refusing to start with DEBUG off without {', '.join(refused)}:\n"
            + "".join(f"  - {name}: {need}\n" for name, need in refused.items())
            + 'Set them in the environment (README.md, "Production settings"), or set DEBUG=1 '
            "for local development."
        )
    # HTTPS only: plain HTTP is redirected, browsers are told to use nothing but HTTPS for a
    # year (HSTS, subdomains included) and cookies never travel over plain HTTP. SECURE_COOKIES=0
    # turns all of it off to serve over plain HTTP, as the tests do (tests/settings.py).
    # HSTS preload stays off (check --deploy's security.W021, silenced below): a preload list
    # entry is all but irreversible and binds every subdomain of the ministry's domain, a choice
    # for its owner.
    https_only = env_bool("SECURE_COOKIES", default=True)
    SECURE_SSL_REDIRECT = https_only
    # A load balancer probes the health endpoints over plain HTTP inside the network.
    SECURE_REDIRECT_EXEMPT = [r"^health/(live|ready)$"]
    hsts_seconds = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_SECONDS = hsts_seconds if https_only else 0
    SECURE_HSTS_INCLUDE_SUBDOMAINS = https_only
    SILENCED_SYSTEM_CHECKS = ["security.W021"]
    SESSION_COOKIE_SECURE = https_only
    CSRF_COOKIE_SECURE = https_only

# Behind a proxy that ends TLS, the scheme the browser used comes in the header the proxy sets
# (SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto); without it every request would look like plain
# HTTP and be redirected forever. Set it only if the proxy always overwrites that header.
if proxy_ssl_header := os.environ.get("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + proxy_ssl_header.upper().replace("-", "_"), "https")
# Origins (scheme and host, e.g. https://alem.example) whose forms and API calls the CSRF check
# accepts besides the request's own host: needed when the proxy does not pass the Host on.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# How many reverse proxies stand in front of the web process, each appending the address it saw
# to X-Forwarded-For. 0: the header is ignored and the connection's address is the client's.
# The lockout and the API throttles count the address alem.client_address derives from it.
try:
    ALEM_TRUSTED_PROXIES = int(os.environ.get("ALEM_TRUSTED_PROXIES") or "0")
except ValueError:
    ALEM_TRUSTED_PROXIES = -1
if ALEM_TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured(
        "ALEM_TRUSTED_PROXIES must be the number of reverse proxies in front of Alem (0 or more), "
        f"got {os.environ.get('ALEM_TRUSTED_PROXIES')!r}."
    )

SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# ---------------------------------------------------------------------------------------------
# Applications
# ---------------------------------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "guardian",
    "django_celery_beat",
    "portfolio",
    "governance",
]

MIDDLEWARE = [
    "alem.observability.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web process itself, hashed names cached for a year (whitenoise).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # Deciders and treasury operators enrol an authenticator before anything else.
    "alem.middleware.SecondFactorEnrolmentMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "alem.urls"
WSGI_APPLICATION = "alem.wsgi.application"
ASGI_APPLICATION = "alem.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "alem.context_processors.navigation",
            ],
        },
    },
]

# ---------------------------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------------------------

# PostgreSQL, and nothing else, from DATABASE_URL. In development the Makefile's targets start the
# embedded server and set it (embedded_db.py); with DEBUG off the Security section refuses to
# start without it. Unset, every use of the database fails with an error that says so
# (alem.no_database), while commands that need no database still run.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60"))
        )
    }
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            f"DATABASE_URL must point at PostgreSQL (postgres://...), not "
            f"{DATABASE_URL.partition(':')[0]}: Alem runs on PostgreSQL alone (its exact "
            "18-decimal quantities, row locks and backups are built and tested there)."
        )
else:
    DATABASES = {"default": {"ENGINE": "alem.no_database"}}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# ---------------------------------------------------------------------------------------------
# Authentication and object permissions
# ---------------------------------------------------------------------------------------------

AUTHENTICATION_BACKENDS = [
    # First, so a locked-out username and address is refused before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# Alem never grants anything to anonymous visitors, so guardian needs no anonymous user row.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "queue"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = int(os.environ.get("SESSION_COOKIE_AGE", str(8 * 3600)))

# Two factors: TOTP devices (django-otp). A code is good for one 30-second step either side of
# now, and once only; repeated wrong codes slow the device down.
OTP_TOTP_ISSUER = "Alem"
OTP_TOTP_TOLERANCE = 1
# Authenticator secrets are stored encrypted (AES-GCM, ``alem.encryption``) under this key, which
# never enters the database: 32 random bytes in URL-safe base64, e.g. from
#   python -c "import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())"
# Development derives one from SECRET_KEY; with DEBUG off it must be given (the Security section
# refuses to start without it).
ALEM_SECRETS_KEY = os.environ.get("ALEM_SECRETS_KEY", "")
# The audit chain is keyed: each event's hash is an HMAC under this key, which never enters the
# database, so whoever can only write the database cannot recompute the chain after an edit.
# At least 32 characters; development derives one from SECRET_KEY; with DEBUG off it must be
# given (the Security section refuses to start without it). Changing it makes every existing
# event fail verification: keep it for the chain's life.
ALEM_AUDIT_KEY = os.environ.get("ALEM_AUDIT_KEY", "")
# Checkpoints of the public audit chain are signed with this Ed25519 private key (PEM, PKCS#8),
# which never enters the database (governance.checkpoints): in ALEM_CHECKPOINT_KEY either 64 hex
# characters (the raw 32-byte key) or the PEM (newlines may be written as \n), or else the path
# of a PEM file in ALEM_CHECKPOINT_KEY_FILE.
# Development without either generates one under var/ on first use; with DEBUG off one must be
# given (the Security section refuses to start without it). Keep it for the chain's life: the
# public pages publish its public key, against which outsiders check every checkpoint.
ALEM_CHECKPOINT_KEY = os.environ.get("ALEM_CHECKPOINT_KEY", "")
ALEM_CHECKPOINT_KEY_FILE = os.environ.get("ALEM_CHECKPOINT_KEY_FILE", "")

# Four eyes on the back office: a newly granted deciding role becomes usable only this many
# hours after a second site administrator confirmed it (governance.services.admin_changes).
ALEM_ROLE_COOLING_OFF_HOURS = float(os.environ.get("ALEM_ROLE_COOLING_OFF_HOURS", "24"))

# Guessing at sign-in (django-axes). Failures are counted twice: per username from any address,
# and per address whatever the username. Either count reaching the limit locks out until the
# cool-off has passed since the last failure: guesses at one account from many addresses lock
# the account, a spray of accounts from one address locks the address for every account.
# django-axes holds both counts to the one limit, so an address cannot get a higher one than an
# account: officials behind one ministry NAT share one count. We keep the account's limit rather
# than loosen it. Anyone who knows a username can lock its official out (docs/rules.md), so the
# cool-off is short, and `manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS` lift a
# lockout at once. A success does not clear the counts: it would clear its address's count too,
# so the holder of any one valid account could keep guessing at the others. The address is the
# client's as alem.client_address derives it: REMOTE_ADDR, or behind ALEM_TRUSTED_PROXIES
# proxies the entry the outermost of them appended to X-Forwarded-For, never one the client
# wrote (with the proxies miscounted as 0, every client would share the proxy's address).
AXES_CLIENT_IP_CALLABLE = "alem.client_address.client_address"
AXES_FAILURE_LIMIT = int(os.environ.get("AXES_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = float(os.environ.get("AXES_COOLOFF_HOURS", "0.25"))
AXES_LOCKOUT_PARAMETERS = [["username"], ["ip_address"]]
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False
# The lockout page says when to try again (alem.views.locked_out renders AXES_LOCKOUT_TEMPLATE).
AXES_LOCKOUT_CALLABLE = "alem.views.locked_out"
# Never keep the one-time code in the failure log (the password never is).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "otp_token"]

# ---------------------------------------------------------------------------------------------
# Internationalisation
# ---------------------------------------------------------------------------------------------

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("ru", "Русский"), ("kk", "Қазақша")]
TIME_ZONE = "Asia/Almaty"
USE_I18N = True
USE_TZ = True
LOCALE_PATHS = [BASE_DIR / "alem" / "locale"]
LANGUAGE_COOKIE_SAMESITE = "Lax"
# Kazakh date and number formats (Django ships none): alem/formats/kk/formats.py.
FORMAT_MODULE_PATH = ["alem.formats"]

# ---------------------------------------------------------------------------------------------
# Static files: served by gunicorn through whitenoise, so the web tier needs no shared disk.
# With DEBUG off, `manage.py collectstatic` writes hashed, compressed copies (gzip, and Brotli
# where the brotli package is installed) and a manifest into STATIC_ROOT, and {% static %} names
# the hashed file, cacheable forever; a missing file is then an error at render time. With DEBUG
# on the plain storage serves alem/static directly, so `make run` needs no collectstatic.
# ---------------------------------------------------------------------------------------------

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
STATICFILES_DIRS = [BASE_DIR / "alem" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# ---------------------------------------------------------------------------------------------
# Content-Security-Policy (django-csp 4): scripts, styles and everything else from this origin
# only; no inline script or style anywhere on the site.
# ---------------------------------------------------------------------------------------------

CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# ---------------------------------------------------------------------------------------------
# Email: notifications to deciders. SMTP when EMAIL_HOST is set; EMAIL_BACKEND chooses another
# backend explicitly (e.g. django.core.mail.backends.filebased.EmailBackend, one file per e-mail
# under EMAIL_FILE_PATH). Neither: printed to the console, in development only (with DEBUG off
# the Security section refuses to start on a backend that delivers nothing).
# ---------------------------------------------------------------------------------------------

EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = EMAIL_HOST or "localhost"
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "587"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=True)
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "sent-mail"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Alem <no-reply@alem.example>")
# The address links in emails point at.
ALEM_SITE_URL = os.environ.get("ALEM_SITE_URL", "http://127.0.0.1:8000").rstrip("/")

# ---------------------------------------------------------------------------------------------
# REST API
# ---------------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an unauthenticated request gets 401 with WWW-Authenticate.
        "alem.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "alem.api.exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # A throttle keys anonymous callers by the address behind this many trusted proxies (the
    # same count alem.client_address uses); DRF's default (None) would trust the whole
    # X-Forwarded-For header, which any client can write.
    "NUM_PROXIES": ALEM_TRUSTED_PROXIES,
}

# API tokens (governance.api_tokens): one per device, stored as a SHA-256 digest, revoked by
# signing out, by a site administrator, or by a change of password or deactivation; each lasts
# this many hours at most. DRF's own tokens (rest_framework.authtoken), stored as the bearer
# value itself and never expiring, are gone: migration governance 0012 deletes what they stored.
ALEM_API_TOKEN_TTL_HOURS = float(os.environ.get("ALEM_API_TOKEN_TTL_HOURS", "12"))
if ALEM_API_TOKEN_TTL_HOURS <= 0:
    raise ImproperlyConfigured("ALEM_API_TOKEN_TTL_HOURS must be a number of hours above 0.")

SPECTACULAR_SETTINGS = {
    "TITLE": "Alem API",
    "DESCRIPTION": "Governance and approvals of a state crypto reserve fund.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs page describe the whole API: for signed-in users only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Swagger UI served from this origin, so the docs page lives under the site's CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Three models name a choice set `kind`; the funding source's keeps the plain `KindEnum`.
    "ENUM_NAME_OVERRIDES": {
        "OperationKindEnum": "governance.models.OperationKind",
        "CustodyAccountKindEnum": "portfolio.models.CustodyAccount.Kind",
    },
}

# ---------------------------------------------------------------------------------------------
# Celery
# ---------------------------------------------------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_DIR = VAR_DIR / "celery-broker"
# Seconds Redis waits for an acknowledgement before it hands a task to another worker. With late
# acks a task holds its message while it runs or waits for a retry countdown, so every time
# limit and countdown below stays well under it (a redelivery would run the task twice).
CELERY_VISIBILITY_TIMEOUT = int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
else:
    # In development and the tests' first pass only (with DEBUG off the Security section refuses
    # to start without REDIS_URL). One folder serves as both ends of the queue, so a worker and
    # a web server on the same machine talk through it. ``alem.celery`` creates the folders.
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# Acknowledge a task only once it has finished, and hand it back to the queue when the worker
# dies under it: every task is safe to run twice (locks and unique constraints), none is lost.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
# A worker reserves one task at a time, so a slow fetch never holds others hostage.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_TASK_TIME_LIMIT = 300
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
DJANGO_CELERY_BEAT_TZ_AWARE = True

# ---------------------------------------------------------------------------------------------
# Market data: providers, retries and the consensus price
# ---------------------------------------------------------------------------------------------

BINANCE_BASE_URL = os.environ.get("BINANCE_BASE_URL", "https://api.binance.com").rstrip("/")
COINGECKO_BASE_URL = os.environ.get("COINGECKO_BASE_URL", "https://api.coingecko.com").rstrip("/")
# Optional CoinGecko demo key (sent as x-cg-demo-api-key); the public API works without one.
COINGECKO_API_KEY = os.environ.get("COINGECKO_API_KEY", "")
NBK_RATES_URL = os.environ.get("NBK_RATES_URL", "https://nationalbank.kz/rss/get_rates.cfm")

# Seconds to wait for a provider to answer, per request.
ALEM_PRICE_TIMEOUT_SECONDS = float(os.environ.get("ALEM_PRICE_TIMEOUT_SECONDS", "10"))
# Attempts per request on a timeout, a 5xx or a short 429; the waits between attempts double
# from the base, up to the cap. A 429 whose Retry-After exceeds the longest wait, and every
# 418, pause the provider until Retry-After has passed instead.
ALEM_PRICE_HTTP_ATTEMPTS = int(os.environ.get("ALEM_PRICE_HTTP_ATTEMPTS", "3"))
ALEM_PRICE_BACKOFF_SECONDS = float(os.environ.get("ALEM_PRICE_BACKOFF_SECONDS", "1"))
ALEM_PRICE_BACKOFF_MAX_SECONDS = float(os.environ.get("ALEM_PRICE_BACKOFF_MAX_SECONDS", "10"))
ALEM_PRICE_RETRY_AFTER_MAX_WAIT_SECONDS = float(
    os.environ.get("ALEM_PRICE_RETRY_AFTER_MAX_WAIT_SECONDS", "10")
)
# Pause after a 429 or 418 that names no Retry-After.
ALEM_PRICE_DEFAULT_PAUSE_SECONDS = int(os.environ.get("ALEM_PRICE_DEFAULT_PAUSE_SECONDS", "300"))
# A fetch still marked running after this long is taken for dead (its process was killed), so
# the next run may start: longer than the fetch task's time limit, and for backfills (commands
# without a time limit) long enough for five years of history.
ALEM_PRICE_FETCH_LEASE_SECONDS = int(os.environ.get("ALEM_PRICE_FETCH_LEASE_SECONDS", "300"))
ALEM_PRICE_BACKFILL_LEASE_SECONDS = int(os.environ.get("ALEM_PRICE_BACKFILL_LEASE_SECONDS", "3600"))
# Consensus: sources further apart than this share of the median are "divergent"; a price whose
# freshest quote is older than the limit is "stale". Pegged assets follow the official rate,
# published once per business day, hence their own limit.
ALEM_PRICE_MAX_DIVERGENCE = os.environ.get("ALEM_PRICE_MAX_DIVERGENCE", "0.02")
ALEM_PRICE_STALE_AFTER_SECONDS = int(os.environ.get("ALEM_PRICE_STALE_AFTER_SECONDS", "900"))
ALEM_PRICE_PEG_STALE_AFTER_SECONDS = int(
    os.environ.get("ALEM_PRICE_PEG_STALE_AFTER_SECONDS", str(4 * 24 * 3600))
)

# ---------------------------------------------------------------------------------------------
# Alem: money, quantities and workflow
# ---------------------------------------------------------------------------------------------

# (max_digits, decimal_places) of every money-like column, set once here.
ALEM_DECIMALS = {
    # US dollar amounts people enter: notionals, contributions, mandate limits.
    "money": (20, 2),
    # Unit prices in USD; crypto prices need more than cents.
    "price": (28, 10),
    # Asset quantities keep 18 decimals (the precision of BNB and ETH).
    "quantity": (38, 18),
    # Computed USD amounts and ledger movements: quantity x price + fee stays exact.
    "amount": (48, 28),
    # Shares and tolerances, as fractions of one.
    "ratio": (7, 6),
}

# A decision is due this many days after its stage opened (a service target shown in the queue
# and the digest; nothing expires on it).
ALEM_DECISION_DUE_DAYS = int(os.environ.get("ALEM_DECISION_DUE_DAYS", "3"))

# How often an open queue page asks for new items (alem/static/alem/queue.js).
ALEM_QUEUE_POLL_SECONDS = int(os.environ.get("ALEM_QUEUE_POLL_SECONDS", "30"))

# A pre-trade check warns when a value reaches this share of its mandate limit.
ALEM_COMPLIANCE_WARN_AT = "0.90"

# ---------------------------------------------------------------------------------------------
# Anchoring audit checkpoints on chain (governance.anchoring): off unless the RPC URL is set
# ---------------------------------------------------------------------------------------------

# A JSON-RPC node of the chain (BNB Smart Chain mainnet is chain 56), the anchoring account's hex
# private key in a file readable by the worker only (never in the database; the account needs a
# little BNB for gas), how many blocks make an anchor confirmed, and the explorer page of a
# transaction shown beside each checkpoint.
ALEM_ANCHOR_RPC_URL = os.environ.get("ALEM_ANCHOR_RPC_URL", "")
ALEM_ANCHOR_ACCOUNT_KEY_FILE = os.environ.get("ALEM_ANCHOR_ACCOUNT_KEY_FILE", "")
ALEM_ANCHOR_ACCOUNT_KEY = ""  # tests only: the key itself, never from the environment
ALEM_ANCHOR_CHAIN_ID = int(os.environ.get("ALEM_ANCHOR_CHAIN_ID", "56")) or None
ALEM_ANCHOR_CONFIRMATIONS = int(os.environ.get("ALEM_ANCHOR_CONFIRMATIONS", "15"))
ALEM_ANCHOR_EXPLORER_TX_URL = os.environ.get(
    "ALEM_ANCHOR_EXPLORER_TX_URL", "https://bscscan.com/tx/{tx_hash}"
)

# ---------------------------------------------------------------------------------------------
# On-chain reconciliation (portfolio.reconciliation): each chain is read only when its URL is set
# ---------------------------------------------------------------------------------------------

# JSON-RPC nodes of the EVM chains, by the chain's name as the assets and custody accounts write
# it, and an Esplora-compatible HTTP API for Bitcoin (e.g. https://blockstream.info/api). An
# unset URL leaves that chain unread: each run lists its accounts as skipped, never silently.
ALEM_RECONCILIATION_RPC_URLS = {
    "BNB Smart Chain": os.environ.get("ALEM_BSC_RPC_URL", ""),
    "Ethereum": os.environ.get("ALEM_ETHEREUM_RPC_URL", ""),
}
ALEM_ESPLORA_URL = os.environ.get("ALEM_ESPLORA_URL", "").rstrip("/")
# Seconds a node or the Esplora API has to answer one request.
ALEM_RECONCILIATION_TIMEOUT_SECONDS = float(
    os.environ.get("ALEM_RECONCILIATION_TIMEOUT_SECONDS", "20")
)
# The largest difference between a balance observed and the ledger's that is not a break, per
# asset symbol (decimal strings), and for any other asset: one satoshi for bitcoin, one gwei
# for BNB and ether. ALEM_RECONCILIATION_DUST (JSON, e.g. {"USDT": "0.01"}) adds or overrides.
ALEM_RECONCILIATION_DUST = {
    "BTC": "0.00000001",
    "BNB": "0.000000001",
    "ETH": "0.000000001",
    **json.loads(os.environ.get("ALEM_RECONCILIATION_DUST") or "{}"),
}
ALEM_RECONCILIATION_DUST_DEFAULT = os.environ.get("ALEM_RECONCILIATION_DUST_DEFAULT", "0.000000001")

# ---------------------------------------------------------------------------------------------
# Logs and health (alem.observability, alem.health)
# ---------------------------------------------------------------------------------------------

# Everything to stdout, one line per record with the request id: JSON lines (time in UTC,
# level, logger, message, request_id, exception) by default with DEBUG off, text with it on.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text" if DEBUG else "json").lower()
LOGGING = logging_config(log_format=LOG_FORMAT, level=os.environ.get("LOG_LEVEL", "INFO"))

# /health/ready warns when no latest-price fetch succeeded for this long (by default when the
# prices the pages show would be marked stale), and when the audit chain's latest verification
# is older than this (it runs hourly: two runs missed).
ALEM_HEALTH_PRICE_MAX_AGE_SECONDS = int(
    os.environ.get("ALEM_HEALTH_PRICE_MAX_AGE_SECONDS", str(ALEM_PRICE_STALE_AFTER_SECONDS))
)
ALEM_HEALTH_AUDIT_MAX_AGE_SECONDS = int(
    os.environ.get("ALEM_HEALTH_AUDIT_MAX_AGE_SECONDS", str(2 * 3600 + 600))
)

# ---------------------------------------------------------------------------------------------
# Sentry: errors of the web app and the worker, only when SENTRY_DSN is set; nothing personal.
# ---------------------------------------------------------------------------------------------

SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
if SENTRY_DSN:
    sentry_init(
        dsn=SENTRY_DSN,
        environment=os.environ.get("SENTRY_ENVIRONMENT", "development" if DEBUG else "production"),
        release=os.environ.get("SENTRY_RELEASE"),
    )
