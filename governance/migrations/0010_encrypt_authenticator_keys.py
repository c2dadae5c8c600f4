"""Encrypt the authenticator keys already stored (``alem.encryption``); reversible."""

from django.db import migrations

from alem import encryption


def encrypt_keys(apps, schema_editor):
    # The historical model's field is django-otp's plain CharField: values come back as stored.
    devices = apps.get_model("otp_totp", "TOTPDevice").objects.using(schema_editor.connection.alias)
    for pk, key in devices.values_list("pk", "key"):
        if key and not encryption.is_encrypted(key):
            devices.filter(pk=pk).update(key=encryption.encrypt(bytes.fromhex(key)))


def decrypt_keys(apps, schema_editor):
    devices = apps.get_model("otp_totp", "TOTPDevice").objects.using(schema_editor.connection.alias)
    for pk, key in devices.values_list("pk", "key"):
        if encryption.is_encrypted(key):
            devices.filter(pk=pk).update(key=encryption.decrypt(key).hex())


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0009_admin_changes_and_voided_approvals"),
        ("otp_totp", "0003_add_timestamps"),
    ]

    operations = [migrations.RunPython(encrypt_keys, decrypt_keys)]
