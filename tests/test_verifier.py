"""The export bundle and the standalone verifier (rule 11): a bundle exported from Alem checks
out with nothing but Python and ``cryptography``, and every tampering, whether with the bundle
or with the database after a checkpoint was signed, is named at its first bad row."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management.base import CommandError
from django.db import transaction

from governance.audit import (
    audit_record,
    audit_verify,
    event_digest,
    event_fields,
    event_hash,
    head_seal,
)
from governance.checkpoints import checkpoint_public_key, checkpoint_sign
from governance.export import ExportRefused, audit_export
from governance.models import AuditChain, AuditEvent
from tests.commands import run_command
from tests.tampering import superuser_sql
from verifier import alem_verify

VERIFIER = Path(__file__).resolve().parent.parent / "verifier" / "alem_verify.py"


@pytest.fixture
def bundle(alem, tmp_path) -> Path:
    """A bundle of the whole chain with one checkpoint at its head (#14), then two events more."""
    checkpoint_sign()
    with transaction.atomic():
        audit_record(action="price.entered_manually", payload={"note": "after the checkpoint"})
        audit_record(action="price.entered_manually", payload={"note": "and another"})
    audit_export(tmp_path / "bundle")
    return tmp_path / "bundle"


def verify(path: Path, **options) -> str:
    return alem_verify.verify_path(path, **options)


def failure(path: Path, **options) -> str:
    with pytest.raises(alem_verify.Failed) as failed:
        verify(path, **options)
    return str(failed.value)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_lines(path: Path, records: list[dict]) -> None:
    path.write_text(
        "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records),
        encoding="utf-8",
    )


# ---------------------------------------------------------------------------------------------
# The round trip
# ---------------------------------------------------------------------------------------------


def test_an_exported_bundle_verifies(bundle):
    head = AuditChain.objects.get()

    assert verify(bundle).startswith(
        f"OK: 16 events, 1 checkpoints, head #16 digest {head.head_digest}; "
        "latest checkpoint #1 at event #14"
    )


def test_the_bundle_holds_the_documented_files_and_manifest(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())

    assert sorted(p.name for p in bundle.iterdir()) == [
        "checkpoints.jsonl",
        "events.jsonl",
        "manifest.json",
        "public_key.pem",
    ]
    assert (manifest["format"], manifest["version"]) == ("alem-audit-export", 1)
    assert manifest["counts"] == {"events": 16, "checkpoints": 1}
    assert manifest["head"]["sequence"] == 16
    assert manifest["public_key"] == checkpoint_public_key().hex
    event = lines(bundle / "events.jsonl")[0]
    assert set(event) == {
        "sequence",
        "created_at",
        "actor",
        "action",
        "fund",
        "proposal",
        "payload",
        "previous_digest",
        "digest",
        "hmac",
    }


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_an_archived_bundle_verifies(alem, tmp_path, kind):
    checkpoint_sign()

    run_command("export_audit", str(tmp_path / "bundle"), archive=kind)

    assert verify(tmp_path / f"bundle.{kind}").startswith("OK: 14 events, 1 checkpoints")


def test_the_command_reports_what_it_exported(alem, tmp_path):
    output = run_command("export_audit", str(tmp_path / "out"))

    assert output.startswith(f"Exported 14 events and 0 checkpoints to {tmp_path / 'out'}")


def test_exporting_into_a_non_empty_directory_is_refused_and_writes_nothing(alem, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")

    with pytest.raises(CommandError, match="already exists and is not an empty directory"):
        run_command("export_audit", str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_exporting_into_an_empty_directory_fills_it(alem, tmp_path):
    (tmp_path / "out").mkdir()

    audit_export(tmp_path / "out")

    assert verify(tmp_path / "out").startswith("OK: 14 events, 0 checkpoints")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in any directory")
def test_exporting_where_nothing_can_be_written_is_refused(alem, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ExportRefused, match="Cannot write in"):
            audit_export(locked / "out")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_exporting_under_a_missing_directory_is_refused(alem, tmp_path):
    with pytest.raises(ExportRefused, match="is not a directory"):
        audit_export(tmp_path / "missing" / "out")


def test_exporting_under_a_file_is_refused(alem, tmp_path):
    (tmp_path / "file").write_text("")

    with pytest.raises(ExportRefused, match="is not a directory"):
        audit_export(tmp_path / "file" / "out")


# ---------------------------------------------------------------------------------------------
# Tampering with the bundle
# ---------------------------------------------------------------------------------------------


def test_a_changed_field_is_named_at_its_event(bundle):
    events = lines(bundle / "events.jsonl")
    events[6]["payload"]["note"] = "edited"
    events[6]["actor"] = 999
    write_lines(bundle / "events.jsonl", events)

    assert failure(bundle) == "event #7: its digest does not match its content"


def test_a_dropped_event_is_named_where_the_sequence_jumps(bundle):
    events = lines(bundle / "events.jsonl")
    del events[4]
    write_lines(bundle / "events.jsonl", events)

    assert failure(bundle).startswith("event #6 (line 5): sequence 6 where 5 was expected")


def test_two_swapped_events_are_named_at_the_first(bundle):
    events = lines(bundle / "events.jsonl")
    events[3], events[4] = events[4], events[3]
    write_lines(bundle / "events.jsonl", events)

    assert failure(bundle).startswith("event #5 (line 4): sequence 5 where 4 was expected")


def test_a_relinked_event_is_named_by_its_previous_digest(bundle):
    events = lines(bundle / "events.jsonl")
    events[8]["previous_digest"] = events[6]["digest"]
    write_lines(bundle / "events.jsonl", events)

    assert failure(bundle) == "event #9: its previous digest does not match the event before it"


def test_a_checkpoint_forged_with_another_key_does_not_verify(bundle):
    other = Ed25519PrivateKey.generate()
    (checkpoint,) = lines(bundle / "checkpoints.jsonl")
    forged = {
        **checkpoint,
        "sequence": 16,
        "digest": lines(bundle / "events.jsonl")[-1]["digest"],
    }
    forged["signature"] = other.sign(
        checkpoint_message_of(forged["sequence"], forged["digest"], forged["signed_at"])
    ).hex()
    write_lines(bundle / "checkpoints.jsonl", [checkpoint, forged])

    assert failure(bundle) == (
        "checkpoint #2 (event #16): signature does not verify under the public key"
    )


def checkpoint_message_of(sequence, digest, signed_at) -> bytes:
    return alem_verify.checkpoint_message(sequence, digest, signed_at)


def test_events_truncated_after_a_checkpoint_are_caught_by_the_checkpoint(bundle):
    events = lines(bundle / "events.jsonl")
    write_lines(bundle / "events.jsonl", events[:12])

    assert failure(bundle) == (
        "checkpoint #1 (event #14): the chain ends at event #12, before this signed checkpoint "
        "(events after it were removed)"
    )


def test_events_truncated_after_the_last_checkpoint_are_caught_by_the_manifest(bundle):
    events = lines(bundle / "events.jsonl")
    write_lines(bundle / "events.jsonl", events[:15])

    assert failure(bundle) == "manifest: events.jsonl's SHA-256 is not the one the manifest records"


def test_an_edited_manifest_is_caught(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["head"]["sequence"] = 15
    (bundle / "manifest.json").write_text(json.dumps(manifest))

    assert failure(bundle) == "manifest: its head (#15) is not the chain's last event (#16)"


def test_a_replaced_public_key_is_caught_at_the_first_checkpoint(bundle):
    other = Ed25519PrivateKey.generate().public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (bundle / "public_key.pem").write_bytes(pem)

    assert failure(bundle) == (
        "checkpoint #1 (event #14): it names another public key than public_key.pem"
    )


def test_a_bundle_re_signed_under_another_key_fails_against_the_published_key(bundle):
    published = checkpoint_public_key()
    other = Ed25519PrivateKey.generate()
    other_hex = (
        other.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )
    (bundle / "public_key.pem").write_bytes(
        other.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (checkpoint,) = lines(bundle / "checkpoints.jsonl")
    checkpoint["public_key"] = other_hex
    checkpoint["signature"] = other.sign(
        checkpoint_message_of(checkpoint["sequence"], checkpoint["digest"], checkpoint["signed_at"])
    ).hex()
    write_lines(bundle / "checkpoints.jsonl", [checkpoint])

    assert failure(bundle, expected_key=published.hex).startswith(
        "public_key.pem is not the public key you gave"
    )
    assert failure(bundle, expected_key=published.pem).startswith(
        "public_key.pem is not the public key you gave"
    )


def test_the_published_key_given_independently_is_accepted_when_it_matches(bundle):
    assert verify(bundle, expected_key=checkpoint_public_key().pem).startswith("OK: 16 events")


# ---------------------------------------------------------------------------------------------
# Rewriting the database after a checkpoint, as an attacker holding SQL and the HMAC key
# ---------------------------------------------------------------------------------------------


def test_a_database_rewrite_after_a_checkpoint_is_caught_by_the_signed_checkpoint(alem, tmp_path):
    checkpoint_sign()
    previous_hash = previous_digest = None
    for event in AuditEvent.objects.order_by("sequence"):
        if event.sequence < 5:
            previous_hash, previous_digest = event.hash, event.digest
            continue
        if event.sequence == 5:
            event.created_at = event.created_at.replace(year=event.created_at.year - 1)
        content = event_fields(event)
        event.previous_hash, event.previous_digest = previous_hash, previous_digest
        event.hash = event_hash(previous_hash=previous_hash, **content)
        event.digest = event_digest(previous_digest=previous_digest, **content)
        with superuser_sql():
            AuditEvent.objects.filter(pk=event.pk).update(
                created_at=event.created_at,
                previous_hash=event.previous_hash,
                hash=event.hash,
                previous_digest=event.previous_digest,
                digest=event.digest,
            )
        previous_hash, previous_digest = event.hash, event.digest
    head = AuditChain.objects.get()
    AuditChain.objects.update(
        head_hash=previous_hash,
        head_digest=previous_digest,
        seal=head_seal(head.length, previous_hash),
    )
    assert audit_verify().ok  # the keyed chain cannot tell: the attacker holds its key

    audit_export(tmp_path / "bundle")

    assert failure(tmp_path / "bundle") == (
        "checkpoint #1 (event #14): event #14's digest is not the one signed (the chain was "
        "rewritten after this checkpoint)"
    )


# ---------------------------------------------------------------------------------------------
# Standalone: a subprocess with nothing but the standard library and cryptography
# ---------------------------------------------------------------------------------------------


def run_verifier(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-I", str(VERIFIER), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_the_verifier_runs_isolated_and_never_imports_django(bundle, tmp_path):
    check = (
        "import sys; sys.path.insert(0, sys.argv[1]); import alem_verify; "
        "code = alem_verify.main([sys.argv[2]]); "
        "assert 'django' not in sys.modules and 'governance' not in sys.modules; "
        "sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", check, str(VERIFIER.parent), str(bundle)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: 16 events, 1 checkpoints")


def test_the_verifier_exits_1_naming_the_first_bad_row(bundle, tmp_path):
    events = lines(bundle / "events.jsonl")
    events[2]["action"] = "tampered.action"
    write_lines(bundle / "events.jsonl", events)

    result = run_verifier(bundle, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == "FAILED: event #3: its digest does not match its content\n"


def test_the_verifier_exits_2_on_a_missing_file(bundle, tmp_path):
    (bundle / "checkpoints.jsonl").unlink()

    result = run_verifier(bundle, cwd=tmp_path)

    assert result.returncode == 2
    assert "checkpoints.jsonl is missing from the bundle" in result.stderr


def test_the_verifier_exits_2_on_invalid_json(bundle, tmp_path):
    with (bundle / "events.jsonl").open("a") as file:
        file.write("{not json\n")

    result = run_verifier(bundle, cwd=tmp_path)

    assert result.returncode == 2
    assert "events.jsonl line 17 is not valid JSON" in result.stderr


def test_the_verifier_exits_2_on_a_path_that_is_no_bundle(tmp_path):
    result = run_verifier(tmp_path / "nothing", cwd=tmp_path)

    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_the_verifier_checks_a_published_key_given_as_a_file(bundle, tmp_path):
    published = tmp_path / "published.pem"
    published.write_text(checkpoint_public_key().pem)

    result = run_verifier(bundle, "--public-key", published, cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_malformed_checkpoint_is_unusable_input(bundle):
    (checkpoint,) = lines(bundle / "checkpoints.jsonl")
    write_lines(bundle / "checkpoints.jsonl", [{**checkpoint, "sequence": "14"}])

    with pytest.raises(alem_verify.Unusable, match=r"checkpoints\.jsonl line 1"):
        verify(bundle)
