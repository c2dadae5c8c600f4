"""Audit events and checkpoints, decisions, executions and ledger entries: PostgreSQL refuses
UPDATE and DELETE.

The SQL comes from ``governance.append_only``, which later migrations use the same way (one
``append_only.protect(table)`` per table); change it only compatibly.
"""

from django.db import migrations

from governance import append_only


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0018_audit_public_digests"),
        ("portfolio", "0006_price_newest_by_source_index"),
    ]

    operations = [
        append_only.create_function(),
        append_only.protect("governance_auditevent"),
        # Rule 14: an approval is voided by stamping voided_at once; nothing else changes.
        append_only.protect("governance_decision", stamp_once="voided_at"),
        append_only.protect("governance_execution"),
        append_only.protect("portfolio_ledgerentry"),
        append_only.protect("governance_auditcheckpoint"),
    ]
