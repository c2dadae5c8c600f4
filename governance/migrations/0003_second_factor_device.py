from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0002_execution"),
    ]

    operations = [
        # Decisions and fills recorded before step-up existed were confirmed by no device.
        migrations.AddField(
            model_name="decision",
            name="confirmed_by_device",
            field=models.CharField(default="none: recorded before step-up", max_length=100),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="execution",
            name="confirmed_by_device",
            field=models.CharField(default="none: recorded before step-up", max_length=100),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name="decision",
            constraint=models.CheckConstraint(
                condition=models.Q(("confirmed_by_device", ""), _negated=True),
                name="governance_decision_confirmed_by_device",
            ),
        ),
        migrations.AddConstraint(
            model_name="execution",
            constraint=models.CheckConstraint(
                condition=models.Q(("confirmed_by_device", ""), _negated=True),
                name="governance_execution_confirmed_by_device",
            ),
        ),
    ]
