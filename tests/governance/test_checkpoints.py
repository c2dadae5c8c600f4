"""The public digest chain and its signed checkpoints (rule 11): every event carries a digest
anyone can recompute, and the operator's Ed25519 key signs the head whenever it moved, never
over a chain that does not verify."""

import hashlib
import importlib
import stat
from datetime import UTC
from decimal import Decimal

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import transaction

from governance import checkpoints, tasks
from governance.audit import (
    GENESIS_HASH,
    audit_record,
    audit_verify,
    event_digest,
    event_fields,
)
from governance.checkpoints import (
    ChainBroken,
    checkpoint_message,
    checkpoint_public_key,
    checkpoint_sign,
    checkpoints_public,
)
from governance.export import _checkpoint_record, _event_record
from governance.models import AuditChain, AuditCheckpoint, AuditEvent
from governance.schedules import SCHEDULES
from tests.commands import run_command
from tests.tampering import superuser_sql
from verifier import alem_verify


def _break_event(sequence: int) -> None:
    with superuser_sql():
        AuditEvent.objects.filter(sequence=sequence).update(payload={"forged": True})


# ---------------------------------------------------------------------------------------------
# The digest chain
# ---------------------------------------------------------------------------------------------


def test_every_event_carries_a_digest_linked_to_the_one_before(alem):
    events = list(AuditEvent.objects.order_by("sequence"))
    previous = GENESIS_HASH

    for event in events:
        assert event.previous_digest == previous
        assert event.digest == event_digest(previous_digest=previous, **event_fields(event))
        previous = event.digest
    assert AuditChain.objects.get().head_digest == events[-1].digest


def test_an_edit_that_keeps_the_keyed_hash_is_caught_by_its_digest(alem):
    with superuser_sql():
        AuditEvent.objects.filter(sequence=4).update(digest="f" * 64)

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence) == (False, 4)
    assert result.reason == "its content does not match its digest"


def test_the_server_and_the_verifier_compute_the_same_digest_for_awkward_payloads(alem):
    payload = {
        "name": "Алем қоры — ₸ fund «reserve»",
        "amount": Decimal("1234.5600"),
        "fee_share": Decimal("0.000000000000000001"),
        "nested": [[1, "a", None], {"z": True, "ä": [Decimal("-0.10"), "😀"]}],
        "empty": {},
    }
    with transaction.atomic():
        event = audit_record(action="price.entered_manually", payload=payload)
    event.refresh_from_db()  # as the JSON column returns it

    record = _event_record(event)

    assert alem_verify.event_digest(event.previous_digest, record) == event.digest
    assert event.digest == event_digest(
        previous_digest=event.previous_digest, **event_fields(event)
    )


def test_the_server_and_the_verifier_build_the_same_checkpoint_message(alem):
    checkpoint = checkpoint_sign()
    record = _checkpoint_record(checkpoint)

    assert alem_verify.checkpoint_message(
        record["sequence"], record["digest"], record["signed_at"]
    ) == checkpoint_message(checkpoint.sequence, checkpoint.digest, checkpoint.signed_at)
    assert checkpoint_message(14, "ab" * 32, checkpoint.signed_at).startswith(
        b"alem-audit-checkpoint:v1\n14\n" + b"ab" * 32 + b"\n"
    )


def test_the_data_migration_fills_every_digest_in_sequence_order(alem):
    expected = dict(AuditEvent.objects.values_list("sequence", "digest"))
    migration = importlib.import_module("governance.migrations.0018_audit_public_digests")
    # Migration 0018 runs before the append-only triggers exist (0019).
    with superuser_sql():
        for event in AuditEvent.objects.all():
            scrambled = hashlib.sha256(f"scrambled {event.pk}".encode()).hexdigest()
            AuditEvent.objects.filter(pk=event.pk).update(
                digest=scrambled, previous_digest=scrambled
            )
        AuditChain.objects.update(head_digest="0" * 64)
        filled = migration.fill_digests(AuditEvent, AuditChain)

    assert filled == len(expected)
    assert dict(AuditEvent.objects.values_list("sequence", "digest")) == expected
    assert AuditChain.objects.get().head_digest == expected[max(expected)]
    assert audit_verify().ok


# ---------------------------------------------------------------------------------------------
# Signing checkpoints
# ---------------------------------------------------------------------------------------------


def test_a_checkpoint_signs_the_chain_head_under_the_configured_key(alem):
    head = AuditChain.objects.get()

    checkpoint = checkpoint_sign()

    assert (checkpoint.sequence, checkpoint.digest) == (head.length, head.head_digest)
    assert checkpoint.public_key == checkpoint_public_key().hex
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(checkpoint.public_key))
    key.verify(
        bytes.fromhex(checkpoint.signature),
        checkpoint_message(checkpoint.sequence, checkpoint.digest, checkpoint.signed_at),
    )
    with pytest.raises(InvalidSignature):
        key.verify(
            bytes.fromhex(checkpoint.signature),
            checkpoint_message(checkpoint.sequence - 1, checkpoint.digest, checkpoint.signed_at),
        )


def test_signing_again_while_the_head_has_not_moved_returns_the_last_checkpoint(alem):
    first = checkpoint_sign()

    again = checkpoint_sign()

    assert again.pk == first.pk
    assert AuditCheckpoint.objects.count() == 1


def test_a_new_event_moves_the_head_and_the_next_signing_adds_a_checkpoint(alem):
    first = checkpoint_sign()
    with transaction.atomic():
        audit_record(action="price.entered_manually", payload={"note": "later"})

    second = checkpoint_sign()

    assert second.sequence == first.sequence + 1
    assert list(checkpoints_public()) == [second, first]


def test_a_chain_that_does_not_verify_is_refused_and_nothing_is_signed(alem):
    _break_event(3)

    with pytest.raises(ChainBroken, match=r"event #3: its content does not match its hash"):
        checkpoint_sign()
    assert not AuditCheckpoint.objects.exists()


def test_a_chain_without_a_head_signs_nothing(alem):
    AuditChain.objects.all().delete()  # as before the first event

    assert checkpoint_sign() is None
    assert not AuditCheckpoint.objects.exists()


def test_signing_writes_no_audit_event(alem):
    length = AuditEvent.objects.count()

    checkpoint_sign()

    assert AuditEvent.objects.count() == length


def test_the_public_key_is_given_as_hex_and_as_pem_of_the_same_key(alem):
    public = checkpoint_public_key()

    loaded = serialization.load_pem_public_key(public.pem.encode())

    raw = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw.hex() == public.hex
    assert len(public.hex) == 64


def test_development_generates_one_key_under_var_readable_by_its_owner_only(
    db, settings, tmp_path, monkeypatch
):
    settings.DEBUG = True
    settings.ALEM_CHECKPOINT_KEY = ""
    settings.ALEM_CHECKPOINT_KEY_FILE = ""
    path = tmp_path / "var" / "checkpoint-key.pem"
    monkeypatch.setattr(checkpoints, "DEVELOPMENT_KEY_FILE", path)

    first = checkpoint_public_key()
    second = checkpoint_public_key()

    assert first == second
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_production_without_a_key_refuses_to_sign(db, settings):
    settings.DEBUG = False
    settings.ALEM_CHECKPOINT_KEY = ""
    settings.ALEM_CHECKPOINT_KEY_FILE = ""

    with pytest.raises(Exception, match="Set ALEM_CHECKPOINT_KEY"):
        checkpoint_sign()


def test_the_key_may_come_from_a_pem_file(db, settings, tmp_path):
    path = tmp_path / "checkpoint.pem"
    path.write_text(settings.ALEM_CHECKPOINT_KEY.replace("\\n", "\n"))
    expected = checkpoint_public_key()
    settings.ALEM_CHECKPOINT_KEY = ""
    settings.ALEM_CHECKPOINT_KEY_FILE = str(path)

    assert checkpoint_public_key() == expected


# ---------------------------------------------------------------------------------------------
# The task, its schedule and the command
# ---------------------------------------------------------------------------------------------


def test_the_task_signs_the_head_and_returns_its_sequence(alem):
    assert tasks.audit_checkpoint_sign.apply().get() == AuditChain.objects.get().length
    assert AuditCheckpoint.objects.count() == 1


def test_the_task_logs_a_broken_chain_as_an_error_and_signs_nothing(alem, caplog):
    _break_event(5)

    assert tasks.audit_checkpoint_sign.apply().get() is None
    assert "event #5" in caplog.text
    assert not AuditCheckpoint.objects.exists()


def test_the_checkpoint_is_scheduled_hourly():
    (schedule,) = [s for s in SCHEDULES if s.task == "governance.tasks.audit_checkpoint_sign"]

    assert schedule.every.total_seconds() == 3600


def test_the_command_signs_and_reports_the_checkpoint(alem):
    output = run_command("sign_checkpoint")

    checkpoint = AuditCheckpoint.objects.get()
    assert f"Checkpoint of event #{checkpoint.sequence}, digest {checkpoint.digest}" in output


def test_the_command_refuses_a_broken_chain(alem):
    _break_event(2)

    with pytest.raises(CommandError, match="event #2"):
        run_command("sign_checkpoint")


def test_checkpoint_times_are_signed_in_utc(alem):
    checkpoint = checkpoint_sign()

    assert (
        checkpoint_message(checkpoint.sequence, checkpoint.digest, checkpoint.signed_at)
        .decode()
        .endswith(checkpoint.signed_at.astimezone(UTC).isoformat())
    )


def test_the_key_may_be_given_as_64_hex_characters(db, settings):
    raw = "11" * 32
    settings.ALEM_CHECKPOINT_KEY = raw
    expected = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(raw)).public_key()

    assert checkpoint_public_key().hex == (
        expected.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    )


def test_a_key_that_is_neither_pem_nor_hex_is_a_configuration_error(db, settings):
    settings.ALEM_CHECKPOINT_KEY = "not-a-key"

    with pytest.raises(ImproperlyConfigured, match="neither a PEM nor 64 hex characters"):
        checkpoint_public_key()
