"""The database backend when ``DATABASE_URL`` is not set: every use of the database fails with
an error that says how to get one, instead of Django's generic "supply the ENGINE value".

Commands that need no database (``check``, ``makemessages``, ``collectstatic``) still run, as
on Django's own dummy backend, which this one only rewords. The error is an
``OperationalError``, as for a server that does not answer, so ``makemigrations --check`` only
warns that it could not compare the migration history and still compares the models.
"""

from django.db.backends.dummy import base as dummy
from django.db.utils import OperationalError

MESSAGE = (
    "No database: DATABASE_URL is not set. `make run`, `make test` and the other Makefile "
    "targets start the embedded PostgreSQL and set it (for any command: "
    "`.venv/bin/python embedded_db.py -- COMMAND`); to use a PostgreSQL server, set "
    "DATABASE_URL=postgres://USER:PASSWORD@HOST:5432/NAME."
)


class NoDatabase(OperationalError):
    pass


def refuse(*args, **kwargs):
    raise NoDatabase(MESSAGE)


class DatabaseOperations(dummy.DatabaseOperations):
    quote_name = refuse


class DatabaseClient(dummy.DatabaseClient):
    runshell = refuse


class DatabaseIntrospection(dummy.DatabaseIntrospection):
    get_table_list = refuse
    get_table_description = refuse
    get_relations = refuse
    get_indexes = refuse


class DatabaseCreation(dummy.DatabaseCreation):
    create_test_db = refuse


class DatabaseWrapper(dummy.DatabaseWrapper):
    vendor = "none"
    display_name = "no database (DATABASE_URL is not set)"
    _cursor = refuse
    ensure_connection = refuse
    _commit = refuse
    _savepoint_commit = refuse
    _set_autocommit = refuse
    client_class = DatabaseClient
    creation_class = DatabaseCreation
    introspection_class = DatabaseIntrospection
    ops_class = DatabaseOperations
