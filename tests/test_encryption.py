"""Authenticator secrets are encrypted at rest, under a key that is not in the database."""

import importlib
import io
import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django_otp.plugins.otp_totp.models import TOTPDevice

from alem import encryption
from tests.factories import UserFactory, otp_code, otp_device

MIGRATION_NAME = "0010_encrypt_authenticator_keys"
MIGRATION = importlib.import_module(f"governance.migrations.{MIGRATION_NAME}")


def stored_key(device) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT key FROM otp_totp_totpdevice WHERE id = %s", [device.pk])
        return cursor.fetchone()[0]


def test_the_database_holds_no_authenticator_secret(db):
    device = otp_device(UserFactory())

    stored = stored_key(device)

    assert stored.startswith("v1:")
    assert device.key not in stored.lower()
    assert TOTPDevice.objects.get(pk=device.pk).key == device.key  # read back decrypted
    assert TOTPDevice.objects.values_list("key", flat=True).get(pk=device.pk) == device.key


def test_a_code_from_the_encrypted_key_still_signs_in(db):
    user = UserFactory()
    device = otp_device(user)

    assert TOTPDevice.objects.get(pk=device.pk).verify_token(otp_code(user))


def test_the_same_key_is_sealed_differently_each_time(db):
    assert encryption.encrypt(b"k" * 20) != encryption.encrypt(b"k" * 20)


def test_a_data_dump_carries_no_authenticator_secret(db):
    device = otp_device(UserFactory())
    out = io.StringIO()

    call_command("dumpdata", "otp_totp", stdout=out)

    [row] = json.loads(out.getvalue())
    assert row["fields"]["key"].startswith("v1:")
    assert device.key not in out.getvalue()


def test_an_altered_value_or_another_key_does_not_open(db, settings):
    sealed = encryption.encrypt(b"secret-bytes")
    altered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]

    with pytest.raises(ValueError, match="does not open"):
        encryption.decrypt(altered)
    settings.ALEM_SECRETS_KEY = "b3RoZXIta2V5LW90aGVyLWtleS1vdGhlci1rZXktMDE="
    with pytest.raises(ValueError, match="does not open"):
        encryption.decrypt(sealed)


def test_the_migration_encrypts_the_keys_stored_before_it_and_reverses(db):
    device = otp_device(UserFactory())
    plain = device.key
    with connection.cursor() as cursor:
        cursor.execute("UPDATE otp_totp_totpdevice SET key = %s WHERE id = %s", [plain, device.pk])
    editor = type("Editor", (), {"connection": connection})()
    # The models as the migration sees them: django-otp's plain field.
    apps = MigrationLoader(connection).project_state(("governance", MIGRATION_NAME)).apps

    MIGRATION.encrypt_keys(apps, editor)
    encrypted = stored_key(device)
    MIGRATION.encrypt_keys(apps, editor)  # twice changes nothing

    assert encrypted.startswith("v1:") and stored_key(device) == encrypted
    assert TOTPDevice.objects.get(pk=device.pk).key == plain
    MIGRATION.decrypt_keys(apps, editor)
    assert stored_key(device) == plain
