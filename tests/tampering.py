"""Tampering as an attacker with superuser SQL would do it.

The append-only triggers (``governance.append_only``) refuse every UPDATE and DELETE of audit
events, decisions, executions and ledger entries. A database superuser can lift them, and the
tests that prove the verifier catches a rewrite simulate exactly that superuser: inside
``superuser_sql()`` the session runs with ``session_replication_role = replica``, under which
ordinary triggers do not fire. This is why the chain is keyed and its head signed in
checkpoints: the triggers stop the application and its administrators, not the server's owner.
"""

from contextlib import contextmanager

from django.db import connection


@contextmanager
def superuser_sql():
    """Within the block, writes bypass the append-only triggers, as a superuser's could."""
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")
