"""A portable export of the public audit chain, which anyone can check without Alem (rule 11).

The bundle is a directory (optionally archived as .zip or .tar.gz) of:

- ``events.jsonl``: one event per line in sequence order, with every field its digest covers
  (``sequence``, ``created_at``, ``actor``, ``action``, ``fund``, ``proposal``, ``payload``),
  ``previous_digest`` and ``digest``; ``hmac`` is the keyed hash, which outsiders cannot check;
- ``checkpoints.jsonl``: every signed checkpoint up to the exported head, oldest first;
- ``public_key.pem``: the key the checkpoints are signed under;
- ``manifest.json``: format and version, when, counts, the chain head, and each file's SHA-256.

``verifier/alem_verify.py`` checks a bundle with the standard library and ``cryptography`` only.
"""

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
from datetime import UTC
from pathlib import Path

from django.utils import timezone

from governance.audit import consistent_snapshot
from governance.checkpoints import checkpoint_public_key
from governance.models import AuditChain, AuditCheckpoint, AuditEvent

FORMAT = "alem-audit-export"
VERSION = 1
ARCHIVES = ("zip", "tar.gz")


class ExportRefused(Exception):
    """The bundle cannot be written where asked; nothing was written."""


def _line(record: dict) -> bytes:
    return (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _event_record(event: AuditEvent) -> dict:
    return {
        "sequence": event.sequence,
        "created_at": event.created_at.astimezone(UTC).isoformat(),
        "actor": event.actor_id,
        "action": event.action,
        "fund": event.fund_id,
        "proposal": event.proposal_id,
        "payload": event.payload,
        "previous_digest": event.previous_digest,
        "digest": event.digest,
        "hmac": event.hash,
    }


def _checkpoint_record(checkpoint: AuditCheckpoint) -> dict:
    return {
        "sequence": checkpoint.sequence,
        "digest": checkpoint.digest,
        "signed_at": checkpoint.signed_at.astimezone(UTC).isoformat(),
        "public_key": checkpoint.public_key,
        "signature": checkpoint.signature,
    }


def _write_lines(path: Path, records) -> tuple[int, str]:
    """Write one JSON line per record; return how many and the file's SHA-256."""
    sha, count = hashlib.sha256(), 0
    with path.open("wb") as file:
        for record in records:
            line = _line(record)
            file.write(line)
            sha.update(line)
            count += 1
    return count, sha.hexdigest()


def _target(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportRefused(f"{out_dir} already exists and is not an empty directory.")
    if not out_dir.parent.is_dir():
        raise ExportRefused(f"{out_dir.parent} is not a directory.")


def _archive(out_dir: Path, kind: str) -> Path:
    """Archive the bundle beside it (a temporary name first, renamed when complete)."""
    name = f"{out_dir.name}.{kind}"
    final = out_dir.parent / name
    if final.exists():
        raise ExportRefused(f"{final} already exists.")
    temporary = out_dir.parent / f".{name}.partial"
    if kind == "zip":
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out_dir.iterdir()):
                archive.write(path, f"{out_dir.name}/{path.name}")
    else:
        with tarfile.open(temporary, "w:gz") as archive:
            archive.add(out_dir, arcname=out_dir.name)
    os.replace(temporary, final)
    return final


def audit_export(out_dir: Path | str, *, archive: str | None = None) -> dict:
    """Write the whole chain's bundle to ``out_dir`` (which must not exist or be empty) and
    return its manifest; with ``archive`` ("zip" or "tar.gz") also ``OUT_DIR.<archive>``.

    One ``REPEATABLE READ`` snapshot (as ``audit_verify``): the events up to the head, and the
    checkpoints up to it, as they were at one instant. Events are streamed. The files are
    written to a temporary directory beside ``out_dir`` and renamed into place when complete,
    so a failure leaves nothing partial. Raises ``ExportRefused`` when it cannot write there.
    """
    out_dir = Path(out_dir).absolute()
    if archive is not None and archive not in ARCHIVES:
        raise ExportRefused(f"Unknown archive {archive!r}; choose one of {', '.join(ARCHIVES)}.")
    _target(out_dir)
    if archive is not None and (out_dir.parent / f"{out_dir.name}.{archive}").exists():
        raise ExportRefused(f"{out_dir.parent / f'{out_dir.name}.{archive}'} already exists.")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    except OSError as error:
        raise ExportRefused(f"Cannot write in {out_dir.parent}: {error.strerror}.") from error
    try:
        manifest = _write_bundle(staging)
        _target(out_dir)  # nobody filled it meanwhile
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if archive is not None:
        _archive(out_dir, archive)
    return manifest


def _write_bundle(directory: Path) -> dict:
    public_key = checkpoint_public_key()
    with consistent_snapshot():
        created_at = timezone.now()
        head = AuditChain.objects.filter(pk=1).first()
        length = head.length if head else 0
        events = AuditEvent.objects.filter(sequence__lte=length).order_by("sequence")
        event_count, events_sha = _write_lines(
            directory / "events.jsonl",
            (_event_record(event) for event in events.iterator(chunk_size=2000)),
        )
        checkpoints = AuditCheckpoint.objects.filter(sequence__lte=length).order_by("sequence")
        checkpoint_count, checkpoints_sha = _write_lines(
            directory / "checkpoints.jsonl",
            (_checkpoint_record(checkpoint) for checkpoint in checkpoints.iterator()),
        )
    pem = public_key.pem.encode()
    (directory / "public_key.pem").write_bytes(pem)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "created_at": created_at.astimezone(UTC).isoformat(),
        "counts": {"events": event_count, "checkpoints": checkpoint_count},
        "head": {
            "sequence": length,
            "digest": head.head_digest if head else "0" * 64,
        },
        "public_key": public_key.hex,
        "files": {
            "events.jsonl": events_sha,
            "checkpoints.jsonl": checkpoints_sha,
            "public_key.pem": hashlib.sha256(pem).hexdigest(),
        },
    }
    (directory / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return manifest
