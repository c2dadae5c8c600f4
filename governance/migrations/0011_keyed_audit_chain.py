"""Key the audit chain: HMACs under ALEM_AUDIT_KEY instead of plain SHA-256, a sealed head, and
one baseline event that records the rows written before events carried row snapshots.

An existing chain is first verified under its old SHA-256 rule; a broken one stops the migration
(re-sealing it would launder the break). Then every event is re-hashed in order under the key,
and, when the database already held records, one ``audit.rows_baselined`` event records them as
they are, so that from here on ``verify_audit`` can vouch for them. Not reversible: the old
hashes cannot be recovered without re-hashing under SHA-256, which would drop the key.
"""

import hashlib
import json
from datetime import UTC

from django.db import migrations, models
from django.utils import timezone

from governance import audit, records

GENESIS_HASH = "0" * 64


def _content(event) -> dict:
    return {
        "sequence": event.sequence,
        "created_at": event.created_at,
        "actor_id": event.actor_id,
        "action": event.action,
        "fund_id": event.fund_id,
        "proposal_id": event.proposal_id,
        "payload": event.payload,
    }


def _sha256_hash(previous_hash: str, content: dict) -> str:
    """The chain's hash before this migration."""
    body = json.dumps(
        {
            "sequence": content["sequence"],
            "created_at": content["created_at"].astimezone(UTC).isoformat(),
            "actor": content["actor_id"],
            "action": content["action"],
            "fund": content["fund_id"],
            "proposal": content["proposal_id"],
            "payload": content["payload"],
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{previous_hash}\n{body}".encode()).hexdigest()


def key_the_chain(apps, schema_editor):
    alias = schema_editor.connection.alias
    Event = apps.get_model("governance", "AuditEvent")
    Chain = apps.get_model("governance", "AuditChain")
    events = list(Event.objects.using(alias).order_by("sequence"))
    previous = GENESIS_HASH
    for expected, event in enumerate(events, start=1):
        intact = (
            event.sequence == expected
            and event.previous_hash == previous
            and event.hash == _sha256_hash(previous, _content(event))
        )
        if not intact:
            raise RuntimeError(
                f"The audit chain is broken at event #{event.sequence} under its SHA-256 hashes; "
                "this migration re-seals only an intact chain. Investigate with the previous "
                "release's verify_audit before upgrading."
            )
        previous = event.hash
    previous = GENESIS_HASH
    for event in events:
        digest = audit.event_hash(previous_hash=previous, **_content(event))
        Event.objects.using(alias).filter(pk=event.pk).update(previous_hash=previous, hash=digest)
        previous = digest
    length = len(events)
    baseline = _baseline_rows(apps, alias)
    if baseline:
        length += 1
        content = {
            "sequence": length,
            "created_at": timezone.now(),
            "actor_id": None,
            "action": "audit.rows_baselined",
            "fund_id": None,
            "proposal_id": None,
            "payload": audit.normalise_payload({"rows": baseline}),
        }
        digest = audit.event_hash(previous_hash=previous, **content)
        Event.objects.using(alias).create(**content, previous_hash=previous, hash=digest)
        previous = digest
    if length or Chain.objects.using(alias).exists():
        Chain.objects.using(alias).update_or_create(
            pk=1,
            defaults={
                "length": length,
                "head_hash": previous,
                "seal": audit.head_seal(length, previous),
            },
        )


def _baseline_rows(apps, alias) -> list[dict]:
    rows = []
    for label in records.RECORDED:
        # The columns as they were at this migration, not as the models have them now.
        fields = records.recorded_before_reserve(label)
        model = apps.get_model(label)
        for values in model.objects.using(alias).order_by("pk").values("id", *fields):
            rows.append(records.snapshot(label, values, fields))
    return rows


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0010_encrypt_authenticator_keys"),
        ("portfolio", "0005_fund_max_fee_share"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditchain",
            name="seal",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="action",
            field=models.CharField(
                choices=[
                    ("role.granted", "Role granted"),
                    ("role.revoked", "Role revoked"),
                    ("policy.drafted", "Approval policy drafted"),
                    ("policy.published", "Approval policy published"),
                    ("price.entered_manually", "Price entered manually"),
                    ("contribution.recorded", "Contribution recorded"),
                    ("proposal.created", "Proposal created"),
                    ("proposal.updated", "Proposal edited"),
                    ("proposal.submitted", "Proposal submitted"),
                    ("proposal.submit_refused", "Submission refused"),
                    ("proposal.withdrawn", "Proposal withdrawn"),
                    ("decision.recorded", "Decision recorded"),
                    ("decision.refused", "Decision refused"),
                    ("proposal.stage_completed", "Stage completed"),
                    ("proposal.approved", "Proposal approved"),
                    ("proposal.rejected", "Proposal rejected"),
                    ("proposal.changes_requested", "Changes requested"),
                    ("execution.recorded", "Execution recorded"),
                    ("execution.refused", "Execution refused"),
                    ("proposal.executed", "Proposal executed"),
                    ("proposal.expired", "Approval expired"),
                    ("second_factor.enrolled", "Authenticator enrolled"),
                    ("second_factor.reset", "Authenticator reset"),
                    ("admin_change.requested", "Back-office change requested"),
                    ("admin_change.confirmed", "Back-office change confirmed"),
                    ("admin_change.cancelled", "Back-office change cancelled"),
                    ("user.access_changed", "Back-office access changed"),
                    ("user.deactivated", "Account deactivated"),
                    ("user.reactivated", "Account reactivated"),
                    ("decision.voided", "Approval voided"),
                    ("proposal.stage_reopened", "Stage reopened"),
                    ("audit.rows_baselined", "Records taken into the chain"),
                ],
                db_index=True,
                max_length=64,
            ),
        ),
        migrations.RunPython(key_the_chain, elidable=False),
    ]
