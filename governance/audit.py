"""The hash-chained audit log (rule 11).

Every row stores the hash of the row before it and a hash of its own content, so altering,
removing or reordering any row breaks the chain at that row. The hashes are HMACs under
``settings.ALEM_AUDIT_KEY``, which is not in the database: whoever can only write the database
cannot recompute the chain after an edit, and the chain head carries a seal under the same key,
so it cannot be wound back to a shorter chain either. Writers lock the single ``AuditChain``
row, which keeps the chain linear when requests run concurrently.

Beside the keyed chain runs a public one: each event's ``digest`` is a plain SHA-256 of the
previous event's digest and the same canonical content, so anyone holding an export can
recompute it without any key. On its own it proves nothing against the operator, who could
recompute it after an edit; signed checkpoints of its head (``governance.checkpoints``) pin it,
so a rewrite of any event at or before a checkpoint is caught by the standalone verifier
(``verifier/alem_verify.py``), which mirrors ``event_content`` and ``event_digest`` byte for
byte.

The chain also vouches for the records it describes (``governance.records``): verification
replays the row snapshots the events carry and the role grants, and compares them with the
database.
"""

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet, Sum
from django.utils import timezone
from guardian.models import GroupObjectPermission, UserObjectPermission

from governance.models import AuditChain, AuditEvent, AuditVerification
from governance.records import RECORDED, recorded_differences, recorded_models, snapshot
from governance.vocabulary import AuditAction
from portfolio.calculations import decimal_string
from portfolio.models import Fund, FundRole, LedgerEntry, Position
from portfolio.selectors import funds_for_user

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64


def normalise_payload(payload: dict | None) -> dict:
    """The payload as it will read back from the JSON column (decimals and dates as strings)."""
    return json.loads(json.dumps(payload or {}, cls=DjangoJSONEncoder))


def audit_key() -> bytes:
    """The chain's HMAC key: ``ALEM_AUDIT_KEY``, derived from ``SECRET_KEY`` in development."""
    return (settings.ALEM_AUDIT_KEY or f"alem-audit-key:{settings.SECRET_KEY}").encode()


def _mac(message: str, key: bytes | None) -> str:
    return hmac.new(key or audit_key(), message.encode(), hashlib.sha256).hexdigest()


def head_seal(length: int, head_hash: str, *, key: bytes | None = None) -> str:
    """The chain head's seal: an HMAC of its length and last hash."""
    return _mac(f"head\n{length}\n{head_hash}", key)


def event_content(
    *,
    sequence: int,
    created_at,
    actor_id: int | None,
    action: str,
    fund_id: int | None,
    proposal_id: int | None,
    payload: dict,
) -> str:
    """The canonical JSON form of an event's content that both its hash and its digest cover.

    Keys sorted, compact separators, non-ASCII kept as UTF-8, time in UTC ISO 8601. The
    standalone verifier (``verifier/alem_verify.py``) builds the same string from an export.
    """
    return json.dumps(
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


def event_fields(event: AuditEvent) -> dict:
    """The stored event's content, as ``event_content``, ``event_hash`` and ``event_digest``
    take it."""
    return {
        "sequence": event.sequence,
        "created_at": event.created_at,
        "actor_id": event.actor_id,
        "action": event.action,
        "fund_id": event.fund_id,
        "proposal_id": event.proposal_id,
        "payload": event.payload,
    }


def event_hash(*, key: bytes | None = None, previous_hash: str, **content) -> str:
    """HMAC-SHA-256, under the audit key, of the previous hash and ``event_content``."""
    return _mac(f"{previous_hash}\n{event_content(**content)}", key)


def event_digest(*, previous_digest: str, **content) -> str:
    """Plain SHA-256 of the previous event's digest, a newline and ``event_content``: the public
    chain that anyone can recompute from an export (rule 11)."""
    return hashlib.sha256(f"{previous_digest}\n{event_content(**content)}".encode()).hexdigest()


def _locked_chain() -> AuditChain:
    chain = AuditChain.objects.select_for_update().filter(pk=1).first()
    if chain is None:
        if AuditEvent.objects.exists():
            raise RuntimeError(
                "The audit chain head is missing while events exist; run verify_audit."
            )
        try:
            with transaction.atomic():
                AuditChain.objects.create(
                    pk=1,
                    length=0,
                    head_hash=GENESIS_HASH,
                    head_digest=GENESIS_HASH,
                    seal=head_seal(0, GENESIS_HASH),
                )
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
    keyed = event_hash(previous_hash=chain.head_hash, **content)
    public = event_digest(previous_digest=chain.head_digest, **content)
    event = AuditEvent.objects.create(
        **content,
        previous_hash=chain.head_hash,
        hash=keyed,
        previous_digest=chain.head_digest,
        digest=public,
    )
    chain.length = sequence
    chain.head_hash = keyed
    chain.head_digest = public
    chain.seal = head_seal(sequence, keyed)
    chain.save(update_fields=["length", "head_hash", "head_digest", "seal"])
    return event


@dataclass(frozen=True)
class ChainVerification:
    ok: bool
    length: int
    first_bad_sequence: int | None = None
    first_bad_id: int | None = None
    reason: str = ""
    problems: tuple[str, ...] = ()  # every record that differs from the chain, when it is intact


@dataclass
class _Replay:
    """What the events say the records are: row snapshots, and the fund roles granted."""

    rows: dict = field(default_factory=dict)  # (model label, id) -> (sequence, snapshot)
    grants: set = field(default_factory=set)  # (user id, fund id, role)

    def take(self, event: AuditEvent) -> None:
        payload = event.payload or {}
        for row in payload.get("rows", ()):
            self.rows[(row["model"], row["id"])] = (event.sequence, row)
        if event.action in (AuditAction.ROLE_GRANTED, AuditAction.ROLE_REVOKED):
            grant = (payload.get("user_id"), event.fund_id, payload.get("role"))
            if event.action == AuditAction.ROLE_GRANTED:
                self.grants.add(grant)
            else:
                self.grants.discard(grant)


def verify_events(
    events: Iterable[AuditEvent], *, head: AuditChain | None, replay: _Replay | None = None
) -> ChainVerification:
    """Replay ``events`` (in stored order) and compare them with the chain head and its seal."""
    key = audit_key()
    previous_hash = previous_digest = GENESIS_HASH
    expected_sequence = 1
    count = 0
    for event in events:
        problem = ""
        if event.sequence != expected_sequence:
            problem = f"sequence {event.sequence} where {expected_sequence} was expected"
        elif event.previous_hash != previous_hash:
            problem = "its previous hash does not match the row before it"
        elif event.previous_digest != previous_digest:
            problem = "its previous digest does not match the row before it"
        else:
            content = event_fields(event)
            if event.hash != event_hash(key=key, previous_hash=event.previous_hash, **content):
                problem = "its content does not match its hash"
            elif event.digest != event_digest(previous_digest=previous_digest, **content):
                problem = "its content does not match its digest"
        if problem:
            return ChainVerification(False, count, event.sequence, event.pk, problem)
        if replay is not None:
            replay.take(event)
        previous_hash = event.hash
        previous_digest = event.digest
        expected_sequence += 1
        count += 1
    head_length = head.length if head else 0
    head_hash = head.head_hash if head else GENESIS_HASH
    head_digest = head.head_digest if head else GENESIS_HASH
    if head_length != count or head_hash != previous_hash:
        return ChainVerification(
            False,
            count,
            count + 1,
            None,
            f"the chain head records {head_length} events ending in {head_hash[:12]}…, but "
            f"{count} are stored, ending in {previous_hash[:12]}… (rows removed at the end)",
        )
    if head is not None and head.seal != head_seal(head.length, head.head_hash, key=key):
        return ChainVerification(
            False,
            count,
            None,
            None,
            "the chain head's seal does not match its length and hash (the head was rewritten)",
        )
    if head_digest != previous_digest:
        return ChainVerification(
            False,
            count,
            None,
            None,
            f"the chain head's digest {head_digest[:12]}… is not the last event's "
            f"{previous_digest[:12]}…",
        )
    return ChainVerification(True, count)


def _record_problems(replay: _Replay) -> list[str]:
    """Every recorded row that differs from its latest snapshot in the chain, is missing, or
    has none; and every fund role held other than as the grants replay."""
    problems = []
    for model in recorded_models():
        label, name = model._meta.label_lower, model._meta.verbose_name
        stored_ids = set()
        for values in model._default_manager.order_by("pk").values("id", *RECORDED[label]):
            stored_ids.add(values["id"])
            recorded = replay.rows.get((label, values["id"]))
            if recorded is None:
                problems.append(f"{name} {values['id']} is stored but no audit event records it")
                continue
            sequence, row = recorded
            stored = snapshot(label, values)
            changed = recorded_differences(label, stored, row)
            if changed:
                problems.append(
                    f"{name} {values['id']} differs from event #{sequence}: {'; '.join(changed)}"
                )
        for (row_label, row_id), (sequence, _row) in replay.rows.items():
            if row_label == label and row_id not in stored_ids:
                problems.append(f"{name} {row_id}, recorded by event #{sequence}, is missing")
    fund_roles = {
        "content_type": ContentType.objects.get_for_model(Fund),
        "permission__codename__in": FundRole.values,
    }
    held = {
        (user_id, int(fund_pk), role)
        for user_id, fund_pk, role in UserObjectPermission.objects.filter(**fund_roles).values_list(
            "user_id", "object_pk", "permission__codename"
        )
    }
    for user_id, fund_id, role in sorted(held - replay.grants):
        problems.append(f"user {user_id} holds {role} on fund {fund_id} without an audited grant")
    for user_id, fund_id, role in sorted(replay.grants - held, key=str):
        problems.append(
            f"user {user_id} lost {role} on fund {fund_id} without an audited revocation"
        )
    for group, fund_pk, role in GroupObjectPermission.objects.filter(**fund_roles).values_list(
        "group__name", "object_pk", "permission__codename"
    ):
        problems.append(f"group {group!r} holds {role} on fund {fund_pk} without an audited grant")
    return problems + _position_problems()


def _position_problems() -> list[str]:
    """Every running position that differs from the sums of its ledger entries (the trigger
    keeps them equal; only SQL that went around it can part them)."""
    sums = {
        (row["fund_id"], row["asset_id"]): (row["quantity"], row["cost"])
        for row in LedgerEntry.objects.values("fund_id", "asset_id").annotate(
            quantity=Sum("quantity"), cost=Sum("value_usd")
        )
    }
    held = {
        (fund_id, asset_id): (quantity, cost)
        for fund_id, asset_id, quantity, cost in Position.objects.values_list(
            "fund_id", "asset_id", "quantity", "cost_usd"
        )
    }
    problems = []
    for fund_id, asset_id in sorted(sums.keys() | held.keys(), key=str):
        kept = held.get((fund_id, asset_id), (None, None))
        summed = sums.get((fund_id, asset_id), (None, None))
        if kept != summed:
            what = f"asset {asset_id}" if asset_id is not None else "cash"
            kept_quantity, kept_cost, quantity, cost = (
                "none" if amount is None else decimal_string(amount) for amount in (*kept, *summed)
            )
            problems.append(
                f"the position of fund {fund_id} in {what} is {kept_quantity} at a cost of "
                f"{kept_cost}, but its ledger entries sum to {quantity} at {cost}"
            )
    return problems


@contextmanager
def consistent_snapshot():
    """A transaction that sees one instant of the database: ``REPEATABLE READ`` when it is the
    outermost one (inside another, the caller's snapshot stands). For reading the whole chain
    and what it vouches for while writers go on."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def audit_verify() -> ChainVerification:
    """Verify the whole stored chain up to its head, then every record it vouches for.

    One consistent snapshot of the database (``REPEATABLE READ`` on PostgreSQL, when not already
    inside a transaction), so a write committed meanwhile is neither half seen nor reported as
    missing. The chain is streamed in sequence order; records are compared only when it is
    intact, and each one that differs is listed in ``problems``.
    """
    with consistent_snapshot():
        head = AuditChain.objects.filter(pk=1).first()
        events = AuditEvent.objects.order_by("sequence", "id")
        if head is not None:
            events = events.filter(sequence__lte=head.length)
        replay = _Replay()
        found = verify_events(events.iterator(chunk_size=2000), head=head, replay=replay)
        if not found.ok:
            return found
        problems = _record_problems(replay)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return ChainVerification(
            False, found.length, None, None, problems[0] + more, tuple(problems)
        )
    return found


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
