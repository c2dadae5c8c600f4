"""Append-only in PostgreSQL (rule 11): audit events, decisions, executions and ledger entries.

The triggers of ``governance.append_only`` refuse every UPDATE and DELETE, through the ORM and
through raw SQL alike, with ``IntegrityError`` naming the table; the one exception is the void
stamp of an approval (rule 14), which is set once from empty and never changed or cleared.
"""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from governance import services
from governance.models import AuditEvent, Decision, Execution
from portfolio.models import LedgerEntry
from tests.factories import otp_code
from tests.tampering import superuser_sql

# model, the table, a column to change and the new value.
PROTECTED = {
    "audit event": (AuditEvent, "governance_auditevent", "action", "role.revoked"),
    "decision": (Decision, "governance_decision", "verdict", "reject"),
    "execution": (Execution, "governance_execution", "venue", "Elsewhere"),
    "ledger entry": (LedgerEntry, "portfolio_ledgerentry", "memo", "rewritten"),
}


@pytest.fixture
def executed(alem):
    """An approved proposal with one fill: a row in every protected table."""
    proposal = alem.approve_fully(alem.proposal(submit=True))
    services.execution_record(
        proposal_id=proposal.pk,
        actor=alem.users["treasury"],
        quantity=Decimal("10"),
        price_usd=Decimal("600"),
        fee_usd=Decimal("0"),
        venue="Binance",
        external_ref="order-append-only",
        executed_at=timezone.now(),
        otp_token=otp_code(alem.users["treasury"]),
    )
    return proposal


def a_row(model):
    return model.objects.order_by("-pk").first()


def snapshot(model):
    return [model_to_dict(row) for row in model.objects.order_by("pk")]


def refused(table: str, operation: str):
    return pytest.raises(IntegrityError, match=f"{table} is append-only: {operation} refused")


def how(model, row, column, value, way):
    if way == "save":
        setattr(row, column, value)
        row.save()
    elif way == "queryset.update":
        model.objects.filter(pk=row.pk).update(**{column: value})
    elif way == "delete":
        row.delete()
    elif way == "queryset.delete":
        model.objects.filter(pk=row.pk).delete()
    elif way == "sql update":
        with connection.cursor() as cursor:
            cursor.execute(
                f'UPDATE "{model._meta.db_table}" SET "{column}" = %s WHERE id = %s',
                [value, row.pk],
            )
    elif way == "sql delete":
        with connection.cursor() as cursor:
            cursor.execute(f'DELETE FROM "{model._meta.db_table}" WHERE id = %s', [row.pk])


WAYS = {
    "save": "UPDATE",
    "queryset.update": "UPDATE",
    "sql update": "UPDATE",
    "delete": "DELETE",
    "queryset.delete": "DELETE",
    "sql delete": "DELETE",
}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("what", PROTECTED)
def test_the_database_refuses_to_change_or_delete_a_protected_row(executed, what, way):
    model, table, column, value = PROTECTED[what]
    before = snapshot(model)

    with refused(table, WAYS[way]), transaction.atomic():
        how(model, a_row(model), column, value, way)

    assert snapshot(model) == before


def test_a_bulk_update_of_the_ledger_is_refused_as_a_whole(executed):
    before = snapshot(LedgerEntry)

    with refused("portfolio_ledgerentry", "UPDATE"), transaction.atomic():
        LedgerEntry.objects.update(memo="rewritten")

    assert snapshot(LedgerEntry) == before


def test_an_approval_is_voided_once_and_the_stamp_never_changes_after(executed):
    decision = a_row(Decision)
    stamped = timezone.now()

    Decision.objects.filter(pk=decision.pk).update(voided_at=stamped)

    assert Decision.objects.get(pk=decision.pk).voided_at == stamped
    for change in (
        {"voided_at": stamped + dt.timedelta(hours=1)},
        {"voided_at": None},
        {"verdict": "reject"},
    ):
        with refused("governance_decision", "UPDATE"), transaction.atomic():
            Decision.objects.filter(pk=decision.pk).update(**change)
    assert Decision.objects.get(pk=decision.pk).voided_at == stamped


def test_the_void_stamp_cannot_carry_another_change_with_it(executed):
    decision = a_row(Decision)

    with refused("governance_decision", "UPDATE"), transaction.atomic():
        Decision.objects.filter(pk=decision.pk).update(
            voided_at=timezone.now(), comment="never approved"
        )

    assert Decision.objects.get(pk=decision.pk).voided_at is None


def test_a_superuser_can_lift_the_triggers_which_is_why_checkpoints_exist(executed):
    entry = a_row(LedgerEntry)

    with superuser_sql():
        LedgerEntry.objects.filter(pk=entry.pk).update(memo="rewritten")

    assert LedgerEntry.objects.get(pk=entry.pk).memo == "rewritten"
    with refused("portfolio_ledgerentry", "UPDATE"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(memo="again")
