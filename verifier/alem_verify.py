#!/usr/bin/env python3
"""Check an Alem audit export without Alem: python alem_verify.py BUNDLE_DIR_OR_ARCHIVE

Needs Python 3.11+ and the ``cryptography`` package, nothing else (see README.md beside this
file). It recomputes the public digest chain event by event, checks every signed checkpoint
against the public key and the chain, and checks the manifest. It prints ``OK: ...`` and exits 0
when everything holds; otherwise it names the FIRST bad event or checkpoint and exits 1. Input
it cannot use at all (missing files, invalid JSON, an unreadable key) exits 2.

The canonical event content and the checkpoint message below are byte-identical to the server's
(``governance.audit.event_content`` and ``governance.checkpoints.checkpoint_message``).
"""

import argparse
import hashlib
import json
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
FORMAT = "alem-audit-export"
VERSION = 1
FILES = ("events.jsonl", "checkpoints.jsonl", "public_key.pem")
CONTENT_FIELDS = ("sequence", "created_at", "actor", "action", "fund", "proposal", "payload")


class Unusable(Exception):
    """The input cannot be checked at all (exit 2)."""


class Failed(Exception):
    """The input was checked and something does not hold (exit 1)."""


def event_content(event: dict) -> str:
    """The canonical JSON of an event's content: the exact string its digest covers."""
    return json.dumps(
        {name: event[name] for name in CONTENT_FIELDS},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def event_digest(previous_digest: str, event: dict) -> str:
    """SHA-256 of the previous digest, a newline and the canonical content (UTF-8), in hex."""
    return hashlib.sha256(f"{previous_digest}\n{event_content(event)}".encode()).hexdigest()


def checkpoint_message(sequence: int, digest: str, signed_at: str) -> bytes:
    """The bytes a checkpoint's Ed25519 signature covers; ``signed_at`` is its UTC ISO time."""
    return f"alem-audit-checkpoint:v1\n{sequence}\n{digest}\n{signed_at}".encode()


# ---------------------------------------------------------------------------------------------
# Reading the bundle
# ---------------------------------------------------------------------------------------------


def _extract(archive: Path, into: Path) -> None:
    """Unpack a .zip or .tar.gz, refusing any member that would land outside ``into``."""
    root = into.resolve()

    def safe(name: str) -> None:
        target = (root / name).resolve()
        if target != root and root not in target.parents:
            raise Unusable(f"{archive.name}: member {name!r} points outside the archive.")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for name in bundle.namelist():
                    safe(name)
                bundle.extractall(root)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as bundle:
                for member in bundle.getmembers():
                    safe(member.name)
                    if not (member.isfile() or member.isdir()):
                        raise Unusable(f"{archive.name}: member {member.name!r} is not a file.")
                bundle.extractall(root)
        else:
            raise Unusable(f"{archive} is neither a directory nor a .zip or .tar.gz archive.")
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as error:
        raise Unusable(f"{archive}: cannot be unpacked ({error}).") from error


def _bundle_root(directory: Path) -> Path:
    """The directory holding manifest.json: ``directory`` itself, or its only subdirectory."""
    if (directory / "manifest.json").is_file():
        return directory
    children = [child for child in directory.iterdir() if not child.name.startswith(".")]
    if len(children) == 1 and (children[0] / "manifest.json").is_file():
        return children[0]
    raise Unusable(f"{directory}: no manifest.json (is this an Alem audit export?).")


def _json_lines(path: Path, what: str):
    with path.open("r", encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise Unusable(f"{path.name} line {number} is not valid JSON ({error}).") from None
            if not isinstance(record, dict):
                raise Unusable(f"{path.name} line {number} is not a JSON object.")
            yield number, record


def _require(record: dict, fields, where: str) -> None:
    missing = [name for name in fields if name not in record]
    if missing:
        raise Unusable(f"{where} lacks {', '.join(missing)}.")


def _load_public_key(data: bytes, where: str) -> Ed25519PublicKey:
    text = data.strip()
    try:
        if len(text) == 64:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode()))
        else:
            key = serialization.load_pem_public_key(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise Unusable(f"{where}: not an Ed25519 public key in PEM or hex ({error}).") from None
    if not isinstance(key, Ed25519PublicKey):
        raise Unusable(f"{where}: not an Ed25519 public key.")
    return key


def _raw_hex(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


# ---------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------


def verify_bundle(root: Path, *, expected_key: str | bytes | None = None) -> str:
    """Check the bundle in ``root``; return the OK line or raise ``Failed``/``Unusable``."""
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise Unusable(f"manifest.json cannot be read ({error}).") from None
    except json.JSONDecodeError as error:
        raise Unusable(f"manifest.json is not valid JSON ({error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise Unusable(f"manifest.json does not describe an {FORMAT} bundle.")
    if manifest.get("version") != VERSION:
        raise Unusable(
            f"manifest.json is version {manifest.get('version')!r}; this reads {VERSION}."
        )
    for name in FILES:
        if not (root / name).is_file():
            raise Unusable(f"{name} is missing from the bundle.")

    public_key = _load_public_key((root / "public_key.pem").read_bytes(), "public_key.pem")
    public_hex = _raw_hex(public_key)
    if expected_key is not None:
        given = expected_key if isinstance(expected_key, bytes) else expected_key.encode()
        if _raw_hex(_load_public_key(given, "--public-key")) != public_hex:
            raise Failed(
                "public_key.pem is not the public key you gave: the bundle's checkpoints are "
                "signed under a different key."
            )

    # The checkpoints first (they are few): which (sequence, digest) pairs the chain must hold.
    checkpoints = []
    for number, record in _json_lines(root / "checkpoints.jsonl", "checkpoint"):
        _require(
            record,
            ("sequence", "digest", "signed_at", "public_key", "signature"),
            f"checkpoints.jsonl line {number}",
        )
        if not isinstance(record["sequence"], int) or not isinstance(record["signature"], str):
            raise Unusable(f"checkpoints.jsonl line {number}: sequence or signature malformed.")
        checkpoints.append((number, record))
    wanted = {record["sequence"] for _number, record in checkpoints}

    # The events: contiguous from 1, each linked to the one before and hashed over its content.
    previous = GENESIS
    expected = 1
    found_digests = {}
    for number, event in _json_lines(root / "events.jsonl", "event"):
        _require(
            event, (*CONTENT_FIELDS, "previous_digest", "digest"), f"events.jsonl line {number}"
        )
        sequence = event["sequence"]
        if sequence != expected:
            raise Failed(
                f"event #{sequence} (line {number}): sequence {sequence} where {expected} was "
                "expected (an event is missing, added or out of order)"
            )
        if event["previous_digest"] != previous:
            raise Failed(
                f"event #{sequence}: its previous digest does not match the event before it"
            )
        if event["digest"] != event_digest(previous, event):
            raise Failed(f"event #{sequence}: its digest does not match its content")
        if sequence in wanted:
            found_digests[sequence] = event["digest"]
        previous = event["digest"]
        expected += 1
    length = expected - 1

    # The checkpoints: each signed under the public key, each naming an event the chain holds.
    last_sequence = 0
    for number, checkpoint in checkpoints:
        sequence, digest = checkpoint["sequence"], checkpoint["digest"]
        where = f"checkpoint #{number} (event #{sequence})"
        if checkpoint["public_key"] != public_hex:
            raise Failed(f"{where}: it names another public key than public_key.pem")
        try:
            public_key.verify(
                bytes.fromhex(checkpoint["signature"]),
                checkpoint_message(sequence, digest, checkpoint["signed_at"]),
            )
        except (InvalidSignature, ValueError, TypeError):
            raise Failed(f"{where}: signature does not verify under the public key") from None
        if sequence <= last_sequence:
            raise Failed(f"{where}: it is not after the checkpoint before it")
        last_sequence = sequence
        if sequence > length:
            raise Failed(
                f"{where}: the chain ends at event #{length}, before this signed checkpoint "
                "(events after it were removed)"
            )
        if found_digests[sequence] != digest:
            raise Failed(
                f"{where}: event #{sequence}'s digest is not the one signed (the chain was "
                "rewritten after this checkpoint)"
            )

    # The manifest: each file's SHA-256, the counts and the head.
    files = manifest.get("files") or {}
    for name in FILES:
        actual = hashlib.sha256((root / name).read_bytes()).hexdigest()
        if files.get(name) != actual:
            raise Failed(f"manifest: {name}'s SHA-256 is not the one the manifest records")
    counts = manifest.get("counts") or {}
    if counts.get("events") != length or counts.get("checkpoints") != len(checkpoints):
        raise Failed(
            f"manifest: it counts {counts.get('events')} events and {counts.get('checkpoints')} "
            f"checkpoints, the bundle holds {length} and {len(checkpoints)}"
        )
    head = manifest.get("head") or {}
    if head.get("sequence") != length or head.get("digest") != previous:
        raise Failed(
            f"manifest: its head (#{head.get('sequence')}) is not the chain's last event "
            f"(#{length})"
        )
    if manifest.get("public_key") != public_hex:
        raise Failed("manifest: its public key is not the one in public_key.pem")

    latest = (
        f"; latest checkpoint #{len(checkpoints)} at event #{last_sequence}" if checkpoints else ""
    )
    return (
        f"OK: {length} events, {len(checkpoints)} checkpoints, head #{length} digest "
        f"{previous}{latest}; public key {public_hex}"
    )


def verify_path(path: Path, *, expected_key: str | bytes | None = None) -> str:
    """Check a bundle directory or a .zip/.tar.gz of one."""
    if path.is_dir():
        return verify_bundle(_bundle_root(path), expected_key=expected_key)
    if not path.is_file():
        raise Unusable(f"{path} does not exist.")
    with tempfile.TemporaryDirectory(prefix="alem-verify-") as scratch:
        _extract(path, Path(scratch))
        return verify_bundle(_bundle_root(Path(scratch)), expected_key=expected_key)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Check an Alem audit export: the digest chain, the signed checkpoints and "
        "the manifest. Exit 0 if all hold, 1 naming the first that does not, 2 if the input is "
        "unusable."
    )
    parser.add_argument("bundle", type=Path, help="the export directory, .zip or .tar.gz")
    parser.add_argument(
        "--public-key",
        help="the public key as published on Alem's public pages, obtained independently of "
        "the bundle: a PEM file, or the 64 hex characters",
    )
    arguments = parser.parse_args(argv)
    try:
        expected = None
        if arguments.public_key is not None:
            given = Path(arguments.public_key)
            expected = given.read_bytes() if given.is_file() else arguments.public_key
        print(verify_path(arguments.bundle, expected_key=expected))
        return 0
    except Failed as failure:
        print(f"FAILED: {failure}")
        return 1
    except Unusable as problem:
        print(f"UNUSABLE: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
