"""Secrets at rest: authenticator keys are stored encrypted, under a key kept outside the database.

A database dump, a backup or a read-only SQL account shows ``v1:<base64>``, never a TOTP seed;
nobody can compute another person's one-time codes from what the database holds. The key is
``settings.ALEM_SECRETS_KEY`` (32 bytes, URL-safe base64), derived from ``SECRET_KEY`` in
development only.

django-otp's ``TOTPDevice.key`` is a plain ``CharField`` of hex. ``EncryptedHexKeyField``
replaces that one field's class when the governance app is ready (``install``), so everything
django-otp does with ``device.key`` in memory stays as it is, while every value written to the
database or serialised by ``dumpdata`` is encrypted, and every value read back is decrypted.
"""

import base64
import binascii
import hashlib
import os
from functools import cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "v1:"
NONCE_BYTES = 12


@cache
def _cipher(key_setting: str, secret_key: str) -> AESGCM:
    if key_setting:
        try:
            key = base64.urlsafe_b64decode(key_setting)
        except (binascii.Error, ValueError) as exc:
            raise ImproperlyConfigured("ALEM_SECRETS_KEY is not URL-safe base64.") from exc
        if len(key) != 32:
            raise ImproperlyConfigured(f"ALEM_SECRETS_KEY must decode to 32 bytes, not {len(key)}.")
    else:
        key = hashlib.sha256(b"alem-secrets-key:" + secret_key.encode()).digest()
    return AESGCM(key)


def cipher() -> AESGCM:
    return _cipher(settings.ALEM_SECRETS_KEY, settings.SECRET_KEY)


def encrypt(plain: bytes) -> str:
    """``plain`` sealed under the secrets key, as ``v1:`` and URL-safe base64."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = nonce + cipher().encrypt(nonce, plain, None)
    return PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def decrypt(stored: str) -> bytes:
    """The bytes ``encrypt`` sealed; raises ``ValueError`` if the value is not ours or was
    altered, or the key is not the one that sealed it."""
    if not stored.startswith(PREFIX):
        raise ValueError("Not an encrypted value.")
    body = stored[len(PREFIX) :]
    sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    try:
        return cipher().decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], None)
    except Exception as exc:  # cryptography's InvalidTag says nothing more useful
        raise ValueError("The encrypted value does not open with ALEM_SECRETS_KEY.") from exc


def is_encrypted(value: str | None) -> bool:
    return bool(value) and value.startswith(PREFIX)


class EncryptedHexKeyField(models.CharField):
    """A hex secret, hex in memory and encrypted (its bytes, so 20 bytes fit in 80 characters)
    in the database and in serialised data."""

    def from_db_value(self, value, expression, connection):
        return self.to_python(value)

    def to_python(self, value):
        if is_encrypted(value):
            return decrypt(value).hex()
        return super().to_python(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "" or is_encrypted(value):
            return value
        sealed = encrypt(bytes.fromhex(value))
        if len(sealed) > self.max_length:
            raise ValueError(
                f"An encrypted key of {len(value) // 2} bytes does not fit in {self.max_length} "
                "characters; authenticator keys are 20 bytes."
            )
        return sealed

    def value_to_string(self, obj):
        return self.get_prep_value(self.value_from_object(obj))

    def deconstruct(self):
        # Migrations see the field django-otp declared: nothing to migrate in its app.
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.CharField", args, kwargs


def install() -> None:
    """Encrypt django-otp's TOTP keys at rest (called from ``GovernanceConfig.ready``)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice._meta.get_field("key").__class__ = EncryptedHexKeyField
