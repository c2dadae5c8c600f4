"""API tokens stored as digests (``governance.models.ApiToken``), and the end of DRF's.

DRF's ``rest_framework.authtoken`` kept each token as the bearer value itself, in the clear and
with no expiry. The app is no longer installed, so its table is no longer written or read, but
on a database that had it the table and its rows remain: ``delete_plaintext_tokens`` empties it,
so no old token survives in the database or in the backups taken from now on. The table itself
is left (its migrations stay recorded as applied; dropping it here would leave them lying); once
this has run it may be dropped by hand (see the README). Not reversible in substance: deleted
tokens are gone, and a client asks for a new token with both factors.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

OLD_TOKEN_TABLE = "authtoken_token"


def delete_plaintext_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if OLD_TOKEN_TABLE in connection.introspection.table_names():
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {connection.ops.quote_name(OLD_TOKEN_TABLE)}")


class Migration(migrations.Migration):

    dependencies = [
        ('governance', '0011_keyed_audit_chain'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(default='API client', help_text='The device or purpose its holder named when asking for it.', max_length=100)),
                ('prefix', models.CharField(help_text="The token's first characters.", max_length=16)),
                ('digest', models.CharField(editable=False, max_length=64, unique=True)),
                ('created_at', models.DateTimeField()),
                ('expires_at', models.DateTimeField()),
                ('last_used_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('revoked_reason', models.CharField(blank=True, choices=[('signed_out', 'Signed out'), ('revoked_by_user', 'Revoked by its holder'), ('password_changed', 'Password changed'), ('deactivated', 'Account deactivated'), ('revoked_by_admin', 'Revoked by a site administrator')], max_length=32)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='api_tokens', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'API token',
                'ordering': ['-created_at', '-id'],
                'constraints': [models.CheckConstraint(condition=models.Q(('expires_at__gt', models.F('created_at'))), name='governance_apitoken_expires_after_creation'), models.CheckConstraint(condition=models.Q(models.Q(('revoked_at__isnull', True), ('revoked_reason', '')), models.Q(('revoked_at__isnull', False), models.Q(('revoked_reason', ''), _negated=True)), _connector='OR'), name='governance_apitoken_revoked_with_a_reason')],
            },
        ),
        migrations.RunPython(delete_plaintext_tokens, migrations.RunPython.noop),
    ]
