"""What differs under test, over the project's own settings (``alem.settings``).

Tests run production-like: ``DEBUG`` off, so the settings' refusals are live, with a key of
their own and cookies the test client can send over plain HTTP. The environment still wins, so
CI's ``DATABASE_URL`` and ``REDIS_URL`` (and any of these) apply; worker processes the tests
start inherit the same environment.
"""

import os

from django.core.exceptions import ImproperlyConfigured

if not os.environ.get("DATABASE_URL"):
    raise ImproperlyConfigured(
        "The tests run on PostgreSQL and DATABASE_URL is not set. `make test` starts the "
        "embedded server; to run pytest yourself, go through the launcher: "
        "`.venv/bin/python embedded_db.py -- .venv/bin/python -m pytest ...`, or set "
        "DATABASE_URL=postgres://... to use a server of your own."
    )

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789abcdef0123456789")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECURE_COOKIES", "0")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("ALEM_AUDIT_KEY", "tests-only-audit-key-0123456789abcdef0123456789")
# A tests-only Ed25519 key that signs audit checkpoints (never used anywhere else).
os.environ.setdefault(
    "ALEM_CHECKPOINT_KEY",
    "-----BEGIN PRIVATE KEY-----\\n"
    "MC4CAQAwBQYDK2VwBCIEIOlobvVyHlD7IFNnzd8KDZyvUUEAk6ve7lt5RQtvf5y4\\n"
    "-----END PRIVATE KEY-----\\n",
)
os.environ.setdefault("ALEM_SECRETS_KEY", "dGVzdHMtb25seS1zZWNyZXRzLWtleS0wMTIzNDU2Nzg=")
# With DEBUG off the settings require DATABASE_URL (given by `make test`, which starts the
# embedded PostgreSQL, or by CI), REDIS_URL and an e-mail server. CI's first pass and a laptop
# give no broker: this switch, read by alem.settings and meant for the test suite alone, lets
# them run on the filesystem broker under var/ (Django's test runner keeps e-mails in memory).
# Processes the tests start inherit it; CI's REDIS_URL still wins where set.
os.environ["ALEM_TESTS_ONLY_EMBEDDED_SERVICES"] = "1"

from alem.settings import *  # noqa: F403

# The fund builders create a dozen users per fund; the production hasher would dominate.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests run with DEBUG off, where the settings pick whitenoise's manifest storage; that storage
# needs `collectstatic` to have run and fails every {% static %} otherwise. The plain storage
# names the files as they are (tests/test_deployment_files.py covers the manifest storage). For
# the same reason STATIC_ROOT does not exist here: whitenoise looks a static file up when asked
# instead of indexing (and warning about) that folder each time a test client starts.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_AUTOREFRESH = True
