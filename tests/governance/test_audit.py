"""The hash-chained audit log (rule 11): it grows with every change, verifies, and catches
any row altered, removed or reordered; events are written in the transaction they record."""

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from governance import audit, events, services, tasks
from governance.audit import (
    GENESIS_HASH,
    audit_verification_latest,
    audit_verification_run,
    audit_verify,
    event_digest,
    event_fields,
    event_hash,
)
from governance.exceptions import SegregationOfDuties
from governance.models import (
    AuditChain,
    AuditEvent,
    AuditVerification,
    Decision,
    Proposal,
    ProposalState,
)
from governance.policies import StageSpec
from portfolio.models import FundRole, LedgerEntry
from tests.factories import UserFactory
from tests.tampering import superuser_sql

# ---------------------------------------------------------------------------------------------
# An intact chain
# ---------------------------------------------------------------------------------------------


def test_the_chain_grows_by_one_linked_event_per_change_and_verifies(alem):
    # 11 role grants, policy drafted and published, one contribution.
    assert audit_verify().ok
    assert audit_verify().length == 14

    proposal = alem.proposal()
    services.proposal_submit(proposal_id=proposal.pk, actor=alem.users["manager"])
    alem.decide(proposal, "risk")

    events = list(AuditEvent.objects.order_by("sequence"))
    assert [e.action for e in events[14:]] == [
        "proposal.created",
        "proposal.submitted",
        "decision.recorded",
        "proposal.stage_completed",
    ]
    assert [e.sequence for e in events] == list(range(1, 19))
    assert events[0].previous_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.previous_hash == before.hash
    head = AuditChain.objects.get()
    assert (head.length, head.head_hash) == (18, events[-1].hash)
    result = audit_verify()
    assert (result.ok, result.length, result.reason) == (True, 18, "")


def test_an_event_hash_covers_its_content(alem):
    event = AuditEvent.objects.get(sequence=3)

    recomputed = event_hash(previous_hash=event.previous_hash, **event_fields(event))

    assert recomputed == event.hash
    assert len(event.hash) == 64


def test_a_refused_decision_is_on_the_chain(alem):
    proposal = alem.proposal(submit=True)

    with pytest.raises(SegregationOfDuties):
        services.decision_record(
            proposal_id=proposal.pk, user=alem.users["manager"], verdict="approve", otp_token=""
        )

    last = AuditEvent.objects.order_by("-sequence").first()
    assert (last.action, last.payload["code"]) == ("decision.refused", "segregation_of_duties")
    assert audit_verify().ok


# ---------------------------------------------------------------------------------------------
# Tampering is detected at the first bad row
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"payload": {"user": "intruder", "user_id": 999, "role": "propose"}},
        {"action": "role.revoked"},
        {"actor_id": "manager"},
        {"created_at": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)},
    ],
    ids=["payload", "action", "actor", "created_at"],
)
def test_altering_a_row_is_detected_at_that_row(alem, change):
    if "actor_id" in change:
        # The grant was made by the system; pin it on someone.
        change = {"actor_id": alem.users[change["actor_id"]].pk}
    target = AuditEvent.objects.get(sequence=5)
    with superuser_sql():
        AuditEvent.objects.filter(pk=target.pk).update(**change)

    result = audit_verify()

    assert result.ok is False
    assert (result.first_bad_sequence, result.first_bad_id) == (5, target.pk)
    assert result.length == 4
    assert result.reason == "its content does not match its hash"


def test_altering_a_row_and_recomputing_its_hash_is_caught_at_the_next_row(alem):
    target = AuditEvent.objects.get(sequence=5)
    forged_payload = {**target.payload, "role": "approve_ministry"}
    forged = {**event_fields(target), "payload": forged_payload}
    forged_hash = event_hash(previous_hash=target.previous_hash, **forged)
    forged_digest = event_digest(previous_digest=target.previous_digest, **forged)
    with superuser_sql():
        AuditEvent.objects.filter(pk=target.pk).update(
            payload=forged_payload, hash=forged_hash, digest=forged_digest
        )
    following = AuditEvent.objects.get(sequence=6)

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence, result.first_bad_id) == (False, 6, following.pk)
    assert result.reason == "its previous hash does not match the row before it"


def test_deleting_a_middle_row_is_detected_at_the_gap(alem):
    with superuser_sql():
        AuditEvent.objects.filter(sequence=7).delete()
    after_gap = AuditEvent.objects.get(sequence=8)

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence, result.first_bad_id) == (False, 8, after_gap.pk)
    assert result.length == 6
    assert result.reason == "sequence 8 where 7 was expected"


def test_deleting_the_first_row_is_detected(alem):
    with superuser_sql():
        AuditEvent.objects.filter(sequence=1).delete()

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence, result.length) == (False, 2, 0)


def test_deleting_the_last_row_is_detected_against_the_chain_head(alem):
    with superuser_sql():
        AuditEvent.objects.filter(sequence=14).delete()

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence, result.first_bad_id) == (False, 14, None)
    assert result.length == 13
    assert "the chain head records 14 events" in result.reason
    assert "13 are stored" in result.reason


def test_swapping_two_rows_sequences_is_detected_at_the_first(alem):
    third = AuditEvent.objects.get(sequence=3)
    fourth = AuditEvent.objects.get(sequence=4)
    # Through a free number, as the sequence column is unique.
    with superuser_sql():
        AuditEvent.objects.filter(pk=third.pk).update(sequence=1000)
        AuditEvent.objects.filter(pk=fourth.pk).update(sequence=3)
        AuditEvent.objects.filter(pk=third.pk).update(sequence=4)

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence, result.first_bad_id) == (False, 3, fourth.pk)
    assert result.length == 2


def test_a_tampered_chain_head_is_detected(alem):
    AuditChain.objects.update(length=15)

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence, result.length) == (False, 15, 14)


# ---------------------------------------------------------------------------------------------
# The red team's rewrites, by someone who holds the database but not the audit key
# ---------------------------------------------------------------------------------------------


def _rehash_from(sequence: int, *, key: bytes, edit=None) -> None:
    """Rewrite the chain from ``sequence`` on as an attacker would, under ``key``."""
    previous = AuditEvent.objects.get(sequence=sequence - 1).hash if sequence > 1 else GENESIS_HASH
    for event in AuditEvent.objects.filter(sequence__gte=sequence).order_by("sequence"):
        payload = edit(event.payload) if edit and event.sequence == sequence else event.payload
        digest = event_hash(
            key=key, previous_hash=previous, **{**event_fields(event), "payload": payload}
        )
        with superuser_sql():
            AuditEvent.objects.filter(pk=event.pk).update(
                payload=payload, previous_hash=previous, hash=digest
            )
        previous = digest
    AuditChain.objects.update(head_hash=previous)


@pytest.mark.parametrize("key", [b"", b"a-guessed-key"], ids=["plain-sha256", "another-key"])
def test_an_edit_with_the_rest_of_the_chain_recomputed_is_caught(alem, key):
    def grant_ministry(payload):
        return {**payload, "role": "approve_ministry"}

    if key:
        _rehash_from(5, key=key, edit=grant_ministry)
    else:  # the chain as it was before it was keyed: SHA-256 over the same content
        import hashlib

        from governance import audit as audit_module

        original = audit_module._mac
        audit_module._mac = lambda message, _key: hashlib.sha256(message.encode()).hexdigest()
        try:
            _rehash_from(5, key=b"unused", edit=grant_ministry)
        finally:
            audit_module._mac = original

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence) == (False, 5)
    assert result.reason == "its content does not match its hash"


def test_a_truncation_with_the_head_wound_back_is_caught_by_the_seal(alem):
    kept = AuditEvent.objects.get(sequence=12)
    with superuser_sql():
        AuditEvent.objects.filter(sequence__gt=12).delete()
    AuditChain.objects.update(length=12, head_hash=kept.hash)

    result = audit_verify()

    assert result.ok is False
    assert "seal" in result.reason


def test_a_delete_and_renumber_is_caught(alem):
    with superuser_sql():
        AuditEvent.objects.filter(sequence=7).delete()
        for event in AuditEvent.objects.filter(sequence__gt=7).order_by("sequence"):
            AuditEvent.objects.filter(pk=event.pk).update(sequence=event.sequence - 1)
    _rehash_from(7, key=b"not-the-audit-key")
    AuditChain.objects.update(length=13)

    result = audit_verify()

    assert (result.ok, result.first_bad_sequence) == (False, 7)


def test_a_cash_ledger_entry_multiplied_by_100_is_named(alem):
    entry = LedgerEntry.objects.get(fund=alem.fund, asset__isnull=True)
    with superuser_sql():
        LedgerEntry.objects.filter(pk=entry.pk).update(
            quantity=entry.quantity * 100, value_usd=entry.value_usd * 100
        )

    result = audit_verify()

    assert result.ok is False
    assert result.first_bad_sequence is None  # the chain itself is intact
    assert result.reason.startswith(f"ledger entry {entry.pk} differs from event #")
    assert "quantity is '2500000000', recorded '25000000'" in result.reason


def test_a_running_position_altered_in_sql_is_named(alem):
    from portfolio.models import Position

    Position.objects.filter(fund=alem.fund, asset__isnull=True).update(quantity=1)

    result = audit_verify()

    assert result.ok is False
    assert result.first_bad_sequence is None
    assert result.reason.startswith(
        f"the position of fund {alem.fund.pk} in cash is 1 at a cost of 25000000"
    )
    assert "but its ledger entries sum to 25000000" in result.reason


def test_a_quorum_lowered_from_2_to_1_is_named(alem):
    from governance.models import PolicyStage

    committee = PolicyStage.objects.get(policy__fund=alem.fund, order=2)
    PolicyStage.objects.filter(pk=committee.pk).update(quorum=1)

    result = audit_verify()

    assert result.ok is False
    assert f"policy stage {committee.pk} differs" in result.reason
    assert "quorum is 1, recorded 2" in result.reason


def test_a_role_assigned_in_sql_is_named(alem):
    from guardian.shortcuts import assign_perm

    assign_perm("portfolio.approve_ministry", alem.users["manager"], alem.fund)

    result = audit_verify()

    assert result.ok is False
    assert (
        f"user {alem.users['manager'].pk} holds approve_ministry on fund {alem.fund.pk} "
        "without an audited grant"
    ) in result.reason


def test_rows_added_or_changed_behind_the_services_are_all_listed(alem):
    proposal = alem.approve_fully(alem.proposal(submit=True))
    decision = Decision.objects.filter(proposal=proposal).first()
    with superuser_sql():
        Decision.objects.filter(pk=decision.pk).update(verdict="reject")
    LedgerEntry.objects.create(
        fund=alem.fund, kind="contribution", quantity=1, value_usd=1, booked_at=decision.created_at
    )

    result = audit_verify()

    assert result.ok is False
    [added, changed] = result.problems  # in the order of governance.records.RECORDED
    assert added.endswith("is stored but no audit event records it")
    assert changed.startswith(f"decision {decision.pk} differs")
    assert "verdict is 'reject', recorded 'approve'" in changed


def test_the_command_names_a_record_that_differs(alem):
    from django.core.management import CommandError

    from tests.commands import run_command

    entry = LedgerEntry.objects.get(fund=alem.fund, asset__isnull=True)
    with superuser_sql():
        LedgerEntry.objects.filter(pk=entry.pk).update(quantity=1, value_usd=1)

    with pytest.raises(CommandError, match=f"ledger entry {entry.pk} differs"):
        run_command("verify_audit")


def test_events_written_while_the_chain_streams_wait_for_the_next_verification(alem):
    # Given the head was read (14 events) and an event was written before the stream reached it
    head = AuditChain.objects.get()
    payload = {"note": "written meanwhile"}
    created_at = dt.datetime.now(dt.UTC)
    content = {
        "sequence": 15,
        "created_at": created_at,
        "actor_id": None,
        "action": "proposal.created",
        "fund_id": None,
        "proposal_id": None,
        "payload": payload,
    }
    AuditEvent.objects.create(
        **content,
        previous_hash=head.head_hash,
        hash=event_hash(previous_hash=head.head_hash, **content),
        previous_digest=head.head_digest,
        digest=event_digest(previous_digest=head.head_digest, **content),
    )

    result = audit_verify()

    assert (result.ok, result.length) == (True, 14)


def test_writing_after_the_head_row_was_removed_is_refused(alem):
    AuditChain.objects.all().delete()

    with pytest.raises(RuntimeError, match="chain head is missing"):
        services.role_grant(user=alem.users["auditor"], fund=alem.fund, role=FundRole.PROPOSE)

    assert AuditEvent.objects.count() == 14


# ---------------------------------------------------------------------------------------------
# Verifications are kept
# ---------------------------------------------------------------------------------------------


def test_a_verification_keeps_what_it_found_and_who_asked(alem):
    checked = audit_verification_run(requested_by=alem.users["auditor"])

    assert (checked.ok, checked.verified_count, checked.first_bad_sequence, checked.reason) == (
        True,
        14,
        None,
        "",
    )
    assert checked.requested_by == alem.users["auditor"]
    assert audit_verification_latest() == checked
    assert AuditEvent.objects.count() == 14  # verifying records nothing on the chain


def test_a_broken_chain_is_kept_as_found_and_logged_as_an_error(alem, caplog):
    audit_verification_run()
    with superuser_sql():
        AuditEvent.objects.filter(sequence=5).update(payload={"tampered": True})

    checked = audit_verification_run()

    assert (checked.ok, checked.verified_count, checked.first_bad_sequence) == (False, 4, 5)
    assert checked.reason == "its content does not match its hash"
    assert checked.requested_by is None
    assert audit_verification_latest() == checked
    assert "The audit chain is broken at event #5" in caplog.text


@pytest.mark.parametrize(
    ("ok", "first_bad_sequence", "reason"),
    [(True, None, "looks broken"), (True, 3, ""), (False, 3, "")],
    ids=["intact-with-a-reason", "intact-with-a-bad-event", "broken-without-a-reason"],
)
def test_the_database_refuses_a_verification_that_contradicts_itself(
    db, ok, first_bad_sequence, reason
):
    with pytest.raises(IntegrityError), transaction.atomic():
        AuditVerification.objects.create(
            checked_at=dt.datetime.now(dt.UTC),
            ok=ok,
            verified_count=2,
            first_bad_sequence=first_bad_sequence,
            reason=reason,
        )


def test_the_task_verifies_for_the_auditor_who_asked_or_for_the_schedule(alem):
    auditor = alem.users["auditor"]

    assert tasks.audit_chain_verify.apply(kwargs={"requested_by_id": auditor.pk}).get() is True
    assert tasks.audit_chain_verify.apply().get() is True

    assert [v.requested_by for v in AuditVerification.objects.order_by("id")] == [auditor, None]


# ---------------------------------------------------------------------------------------------
# Events are written in the transaction of the change they record
# ---------------------------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.fixture
def fail_after_audit(monkeypatch):
    """Make the event writers' audit_record write its event and then fail, for the given
    actions."""
    actions = set()

    def record_then_fail(**kwargs):
        event = audit.audit_record(**kwargs)
        if kwargs["action"] in actions:
            raise Boom(kwargs["action"])
        return event

    monkeypatch.setattr(events, "audit_record", record_then_fail)
    return actions


def assert_chain_unchanged(length: int) -> None:
    assert AuditEvent.objects.count() == length
    assert AuditChain.objects.get().length == length
    assert audit_verify().ok


def test_a_failed_submission_leaves_neither_the_change_nor_its_event(alem, fail_after_audit):
    proposal = alem.proposal()
    length = AuditEvent.objects.count()
    fail_after_audit.add("proposal.submitted")

    with pytest.raises(Boom):
        services.proposal_submit(proposal_id=proposal.pk, actor=alem.users["manager"])

    proposal.refresh_from_db()
    assert (proposal.state, proposal.policy_id, proposal.current_stage_id) == (
        ProposalState.DRAFT,
        None,
        None,
    )
    assert_chain_unchanged(length)


def test_a_failed_decision_leaves_neither_the_decision_nor_its_events(alem, fail_after_audit):
    proposal = alem.proposal(submit=True)
    length = AuditEvent.objects.count()
    fail_after_audit.add("proposal.stage_completed")

    with pytest.raises(Boom):
        alem.decide(proposal, "risk")

    assert Decision.objects.count() == 0
    assert Proposal.objects.get(pk=proposal.pk).current_stage.order == 1
    assert_chain_unchanged(length)


def test_a_failed_role_grant_leaves_no_permission(alem, fail_after_audit):
    newcomer = UserFactory(username="newcomer")
    length = AuditEvent.objects.count()
    fail_after_audit.add("role.granted")

    with pytest.raises(Boom):
        services.role_grant(user=newcomer, fund=alem.fund, role=FundRole.PROPOSE)

    assert not newcomer.has_perm("portfolio.propose", alem.fund)
    assert_chain_unchanged(length)


def test_a_failed_contribution_books_nothing(alem, fail_after_audit):
    length = AuditEvent.objects.count()
    fail_after_audit.add("contribution.recorded")

    with pytest.raises(Boom):
        services.opening_balance_record(
            fund=alem.fund,
            funding_source=alem.funding_source,
            amount_usd=Decimal("100.00"),
        )

    assert LedgerEntry.objects.count() == 1
    assert_chain_unchanged(length)


def test_a_failed_publication_leaves_the_old_policy_in_force(alem, fail_after_audit):
    draft = services.policy_draft(
        actor=alem.users["fundadmin"],
        fund=alem.fund,
        stages=[StageSpec(1, "Risk", FundRole.REVIEW_RISK, 1)],
    )
    length = AuditEvent.objects.count()
    fail_after_audit.add("policy.published")

    with pytest.raises(Boom):
        services.policy_publish(actor=alem.users["fundadmin2"], policy_id=draft.pk)

    draft.refresh_from_db()
    assert (draft.published_by, draft.published_at) == (None, None)
    assert_chain_unchanged(length)


# ---------------------------------------------------------------------------------------------
# Keying an existing chain (migration governance 0011)
# ---------------------------------------------------------------------------------------------


def _as_before_the_keyed_chain() -> None:
    """Rewrite the stored chain the way the previous release hashed it: plain SHA-256."""
    import hashlib

    original = audit._mac
    audit._mac = lambda message, _key: hashlib.sha256(message.encode()).hexdigest()
    try:
        _rehash_from(1, key=b"unused")
    finally:
        audit._mac = original


def _key_the_chain() -> None:
    import importlib

    from django.apps import apps
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    migration = importlib.import_module("governance.migrations.0011_keyed_audit_chain")
    state = MigrationLoader(connection).project_state(("governance", "0011_keyed_audit_chain"))
    # 0011 ran before the digest columns existed (0018); here they do, so they are let empty
    # while it runs, then filled as 0018 fills them (DDL rolls back with the test).
    columns = "ALTER COLUMN digest {0} NOT NULL, ALTER COLUMN previous_digest {0} NOT NULL"
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred checks pending on it
        cursor.execute(f"ALTER TABLE governance_auditevent {columns.format('DROP')}")
    migration.key_the_chain(state.apps, type("Editor", (), {"connection": connection})())
    digests = importlib.import_module("governance.migrations.0018_audit_public_digests")
    digests.fill_digests(apps.get_model("governance", "AuditEvent"), AuditChain)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE governance_auditevent {columns.format('SET')}")


def test_the_migration_keys_an_intact_chain_and_baselines_the_records(alem):
    _as_before_the_keyed_chain()
    assert audit_verify().ok is False

    with superuser_sql():  # 0011 rehashes the chain; it ran before the append-only triggers
        _key_the_chain()

    result = audit_verify()
    assert (result.ok, result.length) == (True, 15)
    baseline = AuditEvent.objects.get(sequence=15)
    assert baseline.action == "audit.rows_baselined"
    assert {row["model"] for row in baseline.payload["rows"]} >= {
        "portfolio.ledgerentry",
        "governance.approvalpolicy",
        "governance.policystage",
    }


def test_the_migration_refuses_to_re_seal_a_broken_chain(alem):
    _as_before_the_keyed_chain()
    with superuser_sql():
        AuditEvent.objects.filter(sequence=3).update(payload={"forged": True})

    with superuser_sql(), pytest.raises(RuntimeError, match="broken at event #3"):
        _key_the_chain()
