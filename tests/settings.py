"""What differs under test, over the project's own settings (``alem.settings``).

Tests run production-like: ``DEBUG`` off, so the settings' refusals are live, with a key of
their own and cookies the test client can send over plain HTTP. The environment still wins, so
CI's ``DATABASE_URL`` and ``REDIS_URL`` (and any of these) apply; worker processes the tests
start inherit the same environment.
"""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789abcdef0123456789")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECURE_COOKIES", "0")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("ALEM_AUDIT_KEY", "tests-only-audit-key-0123456789abcdef0123456789")
os.environ.setdefault("ALEM_SECRETS_KEY", "dGVzdHMtb25seS1zZWNyZXRzLWtleS0wMTIzNDU2Nzg=")

from alem.settings import *  # noqa: F403

# The fund builders create a dozen users per fund; the production hasher would dominate.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
