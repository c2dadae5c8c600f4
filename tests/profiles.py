"""Hypothesis profiles: short runs on a developer's machine, thorough ones under CI.

``tests/conftest.py`` loads the profile named by ``HYPOTHESIS_PROFILE``, else ``ci`` when ``CI``
is set and ``dev`` otherwise. Tests that set their own example counts take them from
``examples``, so both counts stand side by side where the test is written.
"""

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)

PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")


def examples(*, dev: int, ci: int) -> int:
    """How many examples a test plays under the loaded profile."""
    return ci if PROFILE == "ci" else dev
