"""The hash-chained audit log (rule 11).

Every row stores the hash of the row before it and a hash of its own content, so altering,
removing or reordering any row breaks the chain at that row. Writers lock the single
``AuditChain`` row, which keeps the chain linear when requests run concurrently.
"""

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from governance.models import AuditChain, AuditEvent, AuditVerification
from portfolio.models import FundRole
from portfolio.selectors import funds_for_user

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64


def normalise_payload(payload: dict | None) -> dict:
    """The payload as it will read back from the JSON column (decimals and dates as strings)."""
    return json.loads(json.dumps(payload or {}, cls=DjangoJSONEncoder))


def event_hash(
    *,
    previous_hash: str,
    sequence: int,
    created_at,
    actor_id: int | None,
    action: str,
    fund_id: int | None,
    proposal_id: int | None,
    payload: dict,
) -> str:
    """SHA-256 over the previous hash and a canonical JSON form of the event's content."""
    content = json.dumps(
        {
            "sequence": sequence,
            "created_at": created_at.astimezone(UTC).isoformat(),
            "actor": actor_id,
            "action": action,
            "fund": fund_id,
            "proposal": proposal_id,
            "payload": payload,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{previous_hash}\n{content}".encode()).hexdigest()


def _locked_chain() -> AuditChain:
    chain = AuditChain.objects.select_for_update().filter(pk=1).first()
    if chain is None:
        if AuditEvent.objects.exists():
            raise RuntimeError(
                "The audit chain head is missing while events exist; run verify_audit."
            )
        try:
            with transaction.atomic():
                AuditChain.objects.create(pk=1, length=0, head_hash=GENESIS_HASH)
        except IntegrityError:
            pass  # another writer created it first
        chain = AuditChain.objects.select_for_update().get(pk=1)
    return chain


def audit_record(
    *, action: str, actor=None, fund=None, proposal=None, payload: dict | None = None
) -> AuditEvent:
    """Append one event to the chain. Must run inside the transaction of the change it records.

    Locks the chain head until that transaction ends.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change it records.")
    chain = _locked_chain()
    sequence = chain.length + 1
    content = {
        "sequence": sequence,
        "created_at": timezone.now(),
        "actor_id": actor.pk if actor is not None else None,
        "action": action,
        "fund_id": fund.pk if fund is not None else getattr(proposal, "fund_id", None),
        "proposal_id": proposal.pk if proposal is not None else None,
        "payload": normalise_payload(payload),
    }
    digest = event_hash(previous_hash=chain.head_hash, **content)
    event = AuditEvent.objects.create(**content, previous_hash=chain.head_hash, hash=digest)
    chain.length = sequence
    chain.head_hash = digest
    chain.save(update_fields=["length", "head_hash"])
    return event


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    length: int
    first_bad_sequence: int | None = None
    first_bad_id: int | None = None
    reason: str = ""


def verify_events(events: Iterable[AuditEvent], *, head: AuditChain | None) -> ChainVerification:
    """Replay ``events`` (in stored order) and compare them with the chain head."""
    previous_hash = GENESIS_HASH
    expected_sequence = 1
    count = 0
    for event in events:
        problem = ""
        if event.sequence != expected_sequence:
            problem = f"sequence {event.sequence} where {expected_sequence} was expected"
        elif event.previous_hash != previous_hash:
            problem = "its previous hash does not match the row before it"
        elif event.hash != event_hash(
            previous_hash=event.previous_hash,
            sequence=event.sequence,
            created_at=event.created_at,
            actor_id=event.actor_id,
            action=event.action,
            fund_id=event.fund_id,
            proposal_id=event.proposal_id,
            payload=event.payload,
        ):
            problem = "its content does not match its hash"
        if problem:
            return ChainVerification(False, count, event.sequence, event.pk, problem)
        previous_hash = event.hash
        expected_sequence += 1
        count += 1
    head_length = head.length if head else 0
    head_hash = head.head_hash if head else GENESIS_HASH
    if head_length != count or head_hash != previous_hash:
        return ChainVerification(
            False,
            count,
            count + 1,
            None,
            f"the chain head records {head_length} events ending in {head_hash[:12]}…, but "
            f"{count} are stored, ending in {previous_hash[:12]}… (rows removed at the end)",
        )
    return ChainVerification(True, count)


def audit_verify() -> ChainVerification:
    """Verify the whole stored chain up to its head as read first, streaming it in sequence order.

    Events written while it streams lie beyond that head and wait for the next verification, so a
    busy log never reads as "rows removed at the end"."""
    head = AuditChain.objects.filter(pk=1).first()
    events = AuditEvent.objects.order_by("sequence", "id")
    if head is not None:
        events = events.filter(sequence__lte=head.length)
    return verify_events(events.iterator(chunk_size=2000), head=head)


def audit_verification_run(*, requested_by=None) -> AuditVerification:
    """Verify the whole chain now and keep what was found, for the auditors' page.

    Run hourly (``governance.tasks.audit_chain_verify``) and when an auditor asks;
    ``requested_by`` is that auditor, None for the schedule. A broken chain is also logged as an
    error, so the operators' alerting hears of it. Writes no audit event: it changes nothing in
    the fund, and an hourly event would bury the log's real ones.
    """
    checked_at = timezone.now()
    found = audit_verify()
    verification = AuditVerification.objects.create(
        checked_at=checked_at,
        requested_by=requested_by,
        ok=found.ok,
        verified_count=found.length,
        first_bad_sequence=found.first_bad_sequence,
        reason=found.reason,
    )
    if not found.ok:
        logger.error(
            "The audit chain is broken at event #%s: %s", found.first_bad_sequence, found.reason
        )
    return verification


def audit_verification_latest() -> AuditVerification | None:
    """The most recent verification of the chain, or None before the first."""
    return AuditVerification.objects.select_related("requested_by").first()


def audit_chain_length() -> int:
    """How many events the chain holds now, as its head records."""
    head = AuditChain.objects.filter(pk=1).first()
    return head.length if head else 0


# ---------------------------------------------------------------------------------------------
# Reading the log (the auditors' pages and export)
# ---------------------------------------------------------------------------------------------


def audit_events_for_user(
    user,
    *,
    fund=None,
    action: str = "",
    actor_username: str = "",
    proposal_id: int | None = None,
    created_from: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Events of the funds ``user`` audits, newest first, filtered by whatever is given.

    Only funds on which the user holds ``audit`` count; events that name no fund (a manual
    price) belong to no fund's log. Actor, fund and proposal come joined, so listing events
    costs the same number of queries however many there are.
    """
    events = AuditEvent.objects.filter(
        fund__in=funds_for_user(user, roles=[FundRole.AUDIT]).values("pk")
    )
    if fund is not None:
        events = events.filter(fund=fund)
    if action:
        events = events.filter(action=action)
    if actor_username:
        events = events.filter(actor__username=actor_username)
    if proposal_id is not None:
        events = events.filter(proposal_id=proposal_id)
    if created_from is not None:
        events = events.filter(created_at__gte=created_from)
    if created_before is not None:
        events = events.filter(created_at__lt=created_before)
    return events.select_related("actor", "fund", "proposal").order_by("-sequence")
