"""Signed checkpoints of the public audit chain (rule 11).

A checkpoint is the operator's signed statement "the chain's event #N has digest D", made with
an Ed25519 key that never enters the database. Anyone who kept a copy of a checkpoint (or
fetched it from the public pages before a rewrite) can later prove that the chain up to #N was
changed: the digest chain is public and keyless, so the standalone verifier
(``verifier/alem_verify.py``) recomputes it from an export and checks every checkpoint's
signature and position. The signed bytes are built by ``checkpoint_message`` alone; the verifier
mirrors it byte for byte.

Checkpoints write no audit event: the checkpoint is itself a statement about the chain, stored
beside it, and an hourly event would both bury the log's real events and move the head it has
just signed, so the next run would never find the head unchanged.
"""

import datetime as dt
import logging
import os
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from governance.audit import audit_verify, consistent_snapshot
from governance.models import AuditChain, AuditCheckpoint

logger = logging.getLogger(__name__)

MESSAGE_PREFIX = "alem-audit-checkpoint:v1"
DEVELOPMENT_KEY_FILE = Path(settings.BASE_DIR) / "var" / "checkpoint-key.pem"


class ChainBroken(Exception):
    """The chain does not verify, so no checkpoint may vouch for it."""


def checkpoint_message(sequence: int, digest: str, signed_at: dt.datetime) -> bytes:
    """The exact bytes a checkpoint's signature covers (UTF-8):

    ``alem-audit-checkpoint:v1\\n{sequence}\\n{digest}\\n{signed_at in UTC, ISO 8601}``

    ``verifier/alem_verify.py`` builds the same bytes; change both or neither.
    """
    return (
        f"{MESSAGE_PREFIX}\n{sequence}\n{digest}\n{signed_at.astimezone(UTC).isoformat()}".encode()
    )


def _development_key() -> bytes:
    """The development key under var/, generated once (mode 0600) so `make run` just works."""
    path = DEVELOPMENT_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()  # another process generated it first
        with os.fdopen(descriptor, "wb") as file:
            file.write(pem)
        logger.warning("Generated a development checkpoint key at %s", path)
    return path.read_bytes()


def signing_key() -> Ed25519PrivateKey:
    """The checkpoint signing key: ``ALEM_CHECKPOINT_KEY`` (a PEM, ``\\n`` escapes allowed, or
    the raw 32-byte private key as 64 hex characters), else the PEM file
    ``ALEM_CHECKPOINT_KEY_FILE``, else (DEBUG only) a development key under var/."""
    value = settings.ALEM_CHECKPOINT_KEY.strip()
    if value and not value.startswith("-----"):
        try:
            return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(value))
        except ValueError as error:
            raise ImproperlyConfigured(
                "ALEM_CHECKPOINT_KEY is neither a PEM nor 64 hex characters."
            ) from error
    if value:
        pem = value.replace("\\n", "\n").encode()
    elif settings.ALEM_CHECKPOINT_KEY_FILE:
        pem = Path(settings.ALEM_CHECKPOINT_KEY_FILE).read_bytes()
    elif settings.DEBUG:
        pem = _development_key()
    else:
        raise ImproperlyConfigured("Set ALEM_CHECKPOINT_KEY or ALEM_CHECKPOINT_KEY_FILE.")
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured("The checkpoint key must be an Ed25519 private key.")
    return key


@dataclass(frozen=True)
class PublicKey:
    hex: str  # the raw 32 bytes, as checkpoints record it
    pem: str  # SubjectPublicKeyInfo


def checkpoint_public_key(key: Ed25519PrivateKey | None = None) -> PublicKey:
    """The public key every new checkpoint is signed under (of ``key``, the signing key by
    default), for the public pages and the checkpoints themselves."""
    public = (key or signing_key()).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(hex=raw.hex(), pem=pem.decode())


def checkpoints_public() -> QuerySet[AuditCheckpoint]:
    """Every checkpoint, newest first, for the public pages and the export."""
    return AuditCheckpoint.objects.order_by("-sequence")


def checkpoint_sign() -> AuditCheckpoint | None:
    """Sign the chain's current head, unless the last checkpoint already covers it.

    Reads the head and verifies the whole chain (``audit_verify``) in one ``REPEATABLE READ``
    snapshot, so what is signed is exactly what was verified; a chain that does not verify
    raises ``ChainBroken`` and nothing is signed. Returns the new checkpoint, the last one when
    the head has not moved since, or None while the chain is empty. Writes no audit event (see
    the module docstring). Run hourly (``governance.tasks.audit_checkpoint_sign``) and by
    ``manage.py sign_checkpoint``.
    """
    key = signing_key()  # a configuration error surfaces before any database work
    public_hex = checkpoint_public_key(key).hex
    with consistent_snapshot():
        head = AuditChain.objects.filter(pk=1).first()
        if head is None or head.length == 0:
            return None
        last = AuditCheckpoint.objects.order_by("-sequence").first()
        if last is not None and last.sequence == head.length and last.digest == head.head_digest:
            return last
        found = audit_verify()
        if not found.ok:
            where = f"event #{found.first_bad_sequence}: " if found.first_bad_sequence else ""
            raise ChainBroken(
                f"The audit chain does not verify ({where}{found.reason}); "
                "no checkpoint was signed."
            )
        signed_at = timezone.now()
        signature = key.sign(checkpoint_message(head.length, head.head_digest, signed_at))
        return AuditCheckpoint.objects.create(
            sequence=head.length,
            digest=head.head_digest,
            signed_at=signed_at,
            public_key=public_hex,
            signature=signature.hex(),
        )


# ---------------------------------------------------------------------------------------------
# Anchoring on chain (governance.anchoring), when ALEM_ANCHOR_RPC_URL is set
# ---------------------------------------------------------------------------------------------

# A failed send waits this long times 2 ** (attempts - 1), at most ANCHOR_RETRY_MAX.
ANCHOR_RETRY_FIRST = dt.timedelta(minutes=1)
ANCHOR_RETRY_MAX = dt.timedelta(hours=1)
# A sent transaction the node no longer knows after this long is sent again.
ANCHOR_LOST_AFTER = dt.timedelta(hours=1)


@dataclass(frozen=True)
class AnchorRun:
    sent: int = 0
    confirmed: int = 0
    failed: int = 0


def checkpoint_anchors_run(*, now: dt.datetime | None = None) -> AnchorRun | None:
    """Anchor every checkpoint not yet on chain, and confirm those sent; None when anchoring
    is off.

    Each checkpoint gets one ``CheckpointAnchor``. A pending anchor whose next attempt is due is
    sent (``anchoring.EvmAnchor.send``): its hash is kept, or the failure is counted, its reason
    kept for the auditors (admin, public page) and logged as an error, and the next attempt
    backed off. A sent anchor is read back: confirmed once mined deep enough, sent again when
    the node lost it or it carries other data. Rows are taken with ``SKIP LOCKED``, so two
    workers never send the same anchor. Run every five minutes
    (``governance.tasks.checkpoint_anchors_run``).
    """
    from governance import anchoring
    from governance.models import CheckpointAnchor

    backend = anchoring.anchor_backend()
    if backend is None:
        return None
    now = now or timezone.now()
    missing = AuditCheckpoint.objects.filter(anchor__isnull=True).order_by("sequence")
    CheckpointAnchor.objects.bulk_create(
        [CheckpointAnchor(checkpoint=c, next_attempt_at=now) for c in missing],
        ignore_conflicts=True,
    )
    sent = confirmed = failed = 0
    due = CheckpointAnchor.objects.filter(
        state=CheckpointAnchor.State.PENDING, next_attempt_at__lte=now
    ) | CheckpointAnchor.objects.filter(state=CheckpointAnchor.State.SENT)
    for anchor_id in due.order_by("checkpoint__sequence").values_list("pk", flat=True):
        with transaction.atomic():
            anchor = (
                CheckpointAnchor.objects.select_for_update(skip_locked=True)
                .select_related("checkpoint")
                .filter(pk=anchor_id)
                .first()
            )
            if anchor is None:
                continue  # another worker has it
            checkpoint = anchor.checkpoint
            payload = anchoring.anchor_payload(checkpoint.sequence, checkpoint.digest)
            try:
                if anchor.state == CheckpointAnchor.State.PENDING:
                    _anchor_send(anchor, backend, payload, now)
                    sent += 1
                elif (outcome := _anchor_confirm(anchor, backend, payload, now)) == "confirmed":
                    confirmed += 1
                elif outcome == "lost":
                    failed += 1
            except anchoring.AnchorError as error:
                _anchor_failed(anchor, str(error), now)
                failed += 1
    return AnchorRun(sent=sent, confirmed=confirmed, failed=failed)


def _anchor_send(anchor, backend, payload: bytes, now: dt.datetime) -> None:
    anchor.chain_id = backend.chain_id()
    anchor.tx_hash = backend.send(payload)
    anchor.state = anchor.State.SENT
    anchor.attempts += 1
    anchor.sent_at = now
    anchor.last_error = ""
    anchor.save()


def _anchor_confirm(anchor, backend, payload: bytes, now: dt.datetime) -> str:
    """Read a sent anchor back: "confirmed", "waiting", or "lost" (sent again next run)."""
    reading = backend.read(anchor.tx_hash, payload)
    if reading.state == "confirmed":
        anchor.state = anchor.State.CONFIRMED
        anchor.block_number = reading.block_number
        anchor.confirmed_at = now
        anchor.save()
        return "confirmed"
    if reading.state == "pending" or (
        reading.state == "missing" and now - anchor.sent_at < ANCHOR_LOST_AFTER
    ):
        return "waiting"  # not mined deep enough, or not yet seen by this node
    _anchor_failed(anchor, f"transaction {anchor.tx_hash} is {reading.state}", now)
    anchor.state = anchor.State.PENDING
    anchor.tx_hash = ""
    anchor.block_number = None
    anchor.next_attempt_at = now
    anchor.save()
    return "lost"


def _anchor_failed(anchor, reason: str, now: dt.datetime) -> None:
    if anchor.state == anchor.State.PENDING:
        anchor.attempts += 1
        delay = min(ANCHOR_RETRY_FIRST * 2 ** (anchor.attempts - 1), ANCHOR_RETRY_MAX)
        anchor.next_attempt_at = now + delay
    anchor.last_error = reason[:300]
    anchor.save()
    logger.error(
        "Anchoring checkpoint #%s failed (attempt %s): %s",
        anchor.checkpoint.sequence,
        anchor.attempts,
        reason,
    )
