import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0004_preference"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditVerification",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("checked_at", models.DateTimeField(db_index=True)),
                ("ok", models.BooleanField()),
                (
                    "verified_count",
                    models.PositiveBigIntegerField(
                        help_text="Events verified: all of them, or those before the first bad one."
                    ),
                ),
                ("first_bad_sequence", models.PositiveBigIntegerField(blank=True, null=True)),
                ("reason", models.TextField(blank=True)),
                (
                    "requested_by",
                    models.ForeignKey(
                        blank=True,
                        help_text="Empty when the schedule ran it.",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-checked_at", "-id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(
                                ("first_bad_sequence__isnull", True), ("ok", True), ("reason", "")
                            ),
                            models.Q(("ok", False), models.Q(("reason", ""), _negated=True)),
                            _connector="OR",
                        ),
                        name="governance_auditverification_reason_iff_broken",
                    )
                ],
            },
        ),
    ]
