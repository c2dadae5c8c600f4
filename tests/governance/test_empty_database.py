"""The audit log from nothing: before the first event, and an event with no transaction.

Its own module: these need a database without the shared fund of ``tests/conftest.py`` (and
one of them a real transaction boundary, ``transaction=True``).
"""

import pytest

from governance.audit import audit_record, audit_verify
from governance.models import AuditChain, AuditEvent
from tests.commands import run_command


@pytest.mark.django_db
def test_an_empty_log_verifies_with_length_zero():
    result = audit_verify()

    assert (result.ok, result.length, result.first_bad_sequence) == (True, 0, None)


@pytest.mark.django_db
def test_verify_audit_accepts_an_empty_log():
    assert run_command("verify_audit").strip() == "Audit chain intact: 0 events."


@pytest.mark.django_db(transaction=True)
def test_audit_record_outside_a_transaction_raises():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit_record(action="proposal.created", payload={"note": "no transaction"})

    assert AuditEvent.objects.count() == 0
    assert AuditChain.objects.count() == 0
