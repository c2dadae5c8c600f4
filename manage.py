#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys

# Commands that only turn code into code (migration files, message catalogues) serve nothing and
# sign nothing. Without a SECRET_KEY they run on the development settings instead of being
# refused; an explicit DEBUG=0 still refuses. Every other command, the web server (WSGI/ASGI) and
# the Celery worker keep the refusal.
CODE_ONLY_COMMANDS = {"makemigrations", "makemessages", "compilemessages"}


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alem.settings")
    if sys.argv[1:2] and sys.argv[1] in CODE_ONLY_COMMANDS and "SECRET_KEY" not in os.environ:
        os.environ.setdefault("DEBUG", "1")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    # Django's command runner swallows a settings error on its first look (so that `help` works
    # without settings) and most commands then fail with "Models aren't loaded yet". Reading the
    # settings here shows why they were refused instead, e.g. DEBUG off on the development key.
    settings.INSTALLED_APPS  # noqa: B018
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
