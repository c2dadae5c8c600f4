"""Running management commands in tests."""

from io import StringIO

from django.core.management import call_command


def run_command(*args, **options) -> str:
    """Run a management command and return what it printed (its stderr is kept off the test
    output; a failure raises ``CommandError`` as usual)."""
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()
