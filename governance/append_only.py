"""Append-only tables, enforced by PostgreSQL itself (rule 11).

One plpgsql function, ``alem_refuse_change()``, refuses every UPDATE and DELETE of a row of a
protected table, whoever sends it: the services, an admin action, ``queryset.update()`` or a raw
``cursor.execute``. It raises SQLSTATE ``23000`` (integrity_constraint_violation), which psycopg
and Django raise as ``django.db.IntegrityError``; the message names the table and the operation.

A table may allow exactly one one-way stamp: ``protect_sql(table, stamp_once="voided_at")``
lets an UPDATE set that column from NULL to a value and change nothing else (rule 14: a voided
approval is marked, never edited or deleted); once set, the stamp can be neither changed nor
cleared.

Protecting another table is one operation in a migration::

    from governance.append_only import protect

    operations = [protect("governance_auditcheckpoint")]

What the triggers do not stop: TRUNCATE (pytest-django's flush uses it; it needs its own
privilege, which the application's role should not hold), and a database superuser, who can
drop the triggers or set ``session_replication_role = replica``. That is why the chain is keyed
and its head is signed in checkpoints: a superuser's rewrite is not prevented but detected.
"""

from django.db import migrations

FUNCTION = "alem_refuse_change"

# The error Django raises for a refusal: class 23 maps to django.db.IntegrityError.
ERRCODE = "23000"

CREATE_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    stamp text := CASE WHEN TG_NARGS > 0 THEN TG_ARGV[0] END;
BEGIN
    IF TG_OP = 'UPDATE' AND stamp IS NOT NULL
       AND (to_jsonb(OLD) - stamp) = (to_jsonb(NEW) - stamp)
       AND to_jsonb(OLD) -> stamp = 'null'::jsonb
       AND to_jsonb(NEW) -> stamp <> 'null'::jsonb THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = '{ERRCODE}',
        MESSAGE = format('%s is append-only: %s refused', TG_TABLE_NAME, TG_OP),
        HINT = CASE WHEN stamp IS NULL
            THEN 'Rows of this table are never changed or deleted.'
            ELSE format('Only %s may be set once, from empty; nothing else changes.', stamp)
        END;
END;
$$;
"""

DROP_FUNCTION_SQL = f"DROP FUNCTION IF EXISTS {FUNCTION}();"


def trigger_name(table: str) -> str:
    return f"{table}_append_only"


def protect_sql(table: str, stamp_once: str | None = None) -> str:
    """The SQL that makes ``table`` append-only (``stamp_once``: the one column settable once)."""
    argument = f"'{stamp_once}'" if stamp_once else ""
    return (
        f'CREATE TRIGGER "{trigger_name(table)}" BEFORE UPDATE OR DELETE ON "{table}" '
        f"FOR EACH ROW EXECUTE FUNCTION {FUNCTION}({argument});"
    )


def unprotect_sql(table: str) -> str:
    """The SQL that lifts ``table``'s protection (the reverse of ``protect_sql``)."""
    return f'DROP TRIGGER IF EXISTS "{trigger_name(table)}" ON "{table}";'


def create_function() -> migrations.RunSQL:
    """The migration operation that creates ``alem_refuse_change()`` (idempotent)."""
    return migrations.RunSQL(CREATE_FUNCTION_SQL, DROP_FUNCTION_SQL)


def protect(table: str, stamp_once: str | None = None) -> migrations.RunSQL:
    """The migration operation that makes ``table`` append-only, reversibly."""
    return migrations.RunSQL(protect_sql(table, stamp_once), unprotect_sql(table))
