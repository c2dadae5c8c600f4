"""Database constraints, named the one way the project names them: ``<app>_<model>_<what>``.

``%(app_label)s`` and ``%(class)s`` are filled in by Django for each model, so a constraint
declared here reads the same in every app and keeps its name if its model moves.
"""

from django.db import models
from django.db.models import Q

PREFIX = "%(app_label)s_%(class)s_"


def unique(*fields: str, what: str, condition: Q | None = None) -> models.UniqueConstraint:
    """At most one row per combination of ``fields`` (among the rows ``condition`` admits)."""
    return models.UniqueConstraint(fields=list(fields), condition=condition, name=PREFIX + what)


def check(condition: Q, *, what: str) -> models.CheckConstraint:
    """Every row satisfies ``condition``."""
    return models.CheckConstraint(condition=condition, name=PREFIX + what)
