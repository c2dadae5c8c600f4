from django.db import migrations, models

import portfolio.fields  # noqa: F401


class Migration(migrations.Migration):
    """A policy version's mandate is required, now that every version carries one."""

    dependencies = [
        ("governance", "0024_whole_reserve"),
    ]

    operations = [
        migrations.AlterField(
            model_name='approvalpolicy',
            name='custody_cooling_off_hours',
            field=models.PositiveSmallIntegerField(),
        ),
        migrations.AlterField(
            model_name='approvalpolicy',
            name='execution_window_days',
            field=models.PositiveSmallIntegerField(),
        ),
        migrations.AlterField(
            model_name='approvalpolicy',
            name='max_asset_share',
            field=models.DecimalField(decimal_places=6, max_digits=7),
        ),
        migrations.AlterField(
            model_name='approvalpolicy',
            name='max_fee_share',
            field=models.DecimalField(decimal_places=6, max_digits=7),
        ),
        migrations.AlterField(
            model_name='approvalpolicy',
            name='max_proposal_notional_usd',
            field=models.DecimalField(decimal_places=2, max_digits=20),
        ),
        migrations.AlterField(
            model_name='approvalpolicy',
            name='price_tolerance',
            field=models.DecimalField(decimal_places=6, max_digits=7),
        ),
    ]
