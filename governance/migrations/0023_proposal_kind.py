from django.db import migrations


class Migration(migrations.Migration):
    """A proposal's ``side`` becomes its ``kind`` (buy, sell, transfer, intake): the rest of the
    whole-reserve schema follows in the next migration."""

    dependencies = [
        ("governance", "0022_public_disclosure"),
    ]

    operations = [
        migrations.RenameField("proposal", "side", "kind"),
    ]
