"""The public digest chain beside the keyed one (rule 11), and signed checkpoints of its head.

Every existing event gets its ``previous_digest`` and ``digest`` in sequence order (streamed, in
batches, so a chain of 100k events does not sit in memory), the head gets ``head_digest``, and
only then do the columns become non-null and unique. The digests are computed over the rows as
stored: a keyed chain broken before this migration stays broken (``verify_audit`` still reports
it, and no checkpoint is signed over it). Reversing drops the columns.
"""

from django.db import connections, migrations, models

from governance import audit

GENESIS_DIGEST = "0" * 64
BATCH = 1000


def fill_digests(Event, Chain, alias: str = "default") -> int:
    """Give every event its public digest, in sequence order, and the head its last digest.

    Takes the model classes (historical in the migration, the real ones in tests); returns how
    many events were filled.
    """
    previous = GENESIS_DIGEST
    pending = []
    count = 0
    events = (
        Event.objects.using(alias)
        .order_by("sequence")
        .only(
            "id",
            "sequence",
            "created_at",
            "actor_id",
            "action",
            "fund_id",
            "proposal_id",
            "payload",
        )
    )
    for event in events.iterator(chunk_size=2000):
        event.previous_digest = previous
        event.digest = audit.event_digest(
            previous_digest=previous,
            sequence=event.sequence,
            created_at=event.created_at,
            actor_id=event.actor_id,
            action=event.action,
            fund_id=event.fund_id,
            proposal_id=event.proposal_id,
            payload=event.payload,
        )
        previous = event.digest
        pending.append(event)
        count += 1
        if len(pending) >= BATCH:
            _write(Event, alias, pending)
            pending = []
    _write(Event, alias, pending)
    Chain.objects.using(alias).filter(pk=1).update(head_digest=previous)
    return count


def _write(Event, alias: str, events) -> None:
    """One UPDATE per event by primary key, sent as a batch (psycopg pipelines executemany):
    ``bulk_update``'s CASE over a thousand ids costs several times more on PostgreSQL."""
    if not events:
        return
    table = connections[alias].ops.quote_name(Event._meta.db_table)
    with connections[alias].cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET previous_digest = %s, digest = %s WHERE id = %s",
            [(event.previous_digest, event.digest, event.pk) for event in events],
        )


def forwards(apps, schema_editor):
    fill_digests(
        apps.get_model("governance", "AuditEvent"),
        apps.get_model("governance", "AuditChain"),
        schema_editor.connection.alias,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0017_proposal_stage_opened_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditchain",
            name="head_digest",
            field=models.CharField(default="0" * 64, max_length=64),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="previous_digest",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="digest",
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="auditevent",
            name="previous_digest",
            field=models.CharField(max_length=64, unique=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="digest",
            field=models.CharField(max_length=64, unique=True),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.CheckConstraint(
                condition=models.Q(("digest__regex", "^[0-9a-f]{64}$")),
                name="governance_auditevent_digest_hex",
            ),
        ),
        migrations.CreateModel(
            name="AuditCheckpoint",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("sequence", models.PositiveBigIntegerField(unique=True)),
                ("digest", models.CharField(max_length=64, unique=True)),
                ("signed_at", models.DateTimeField()),
                (
                    "public_key",
                    models.CharField(help_text="Raw Ed25519 public key, hex.", max_length=64),
                ),
                (
                    "signature",
                    models.CharField(help_text="Ed25519 signature, hex.", max_length=128),
                ),
            ],
            options={
                "ordering": ["-sequence"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("sequence__gte", 1)),
                        name="governance_auditcheckpoint_sequence_positive",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("digest__regex", "^[0-9a-f]{64}$")),
                        name="governance_auditcheckpoint_digest_hex",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("public_key__regex", "^[0-9a-f]{64}$")),
                        name="governance_auditcheckpoint_public_key_hex",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("signature__regex", "^[0-9a-f]{128}$")),
                        name="governance_auditcheckpoint_signature_hex",
                    ),
                ],
            },
        ),
    ]
