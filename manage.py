#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alem.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    # Django's command runner swallows a settings error on its first look (so that `help` works
    # without settings) and most commands then fail with "Models aren't loaded yet". Reading the
    # settings here shows why they were refused instead, e.g. DEBUG off on the development key.
    settings.INSTALLED_APPS  # noqa: B018
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
