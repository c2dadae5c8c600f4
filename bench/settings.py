"""Settings of the real-size benchmark's server: the project's own (``alem.settings``, read from
the environment as always) with the bare yardstick views added under ``/bare/``
(``bench/urls.py``). Nothing else differs, so the pages and the API are measured as deployed."""

from alem.settings import *  # noqa: F403
from alem.settings import BASE_DIR, TEMPLATES

ROOT_URLCONF = "bench.urls"
TEMPLATES[0]["DIRS"] = [*TEMPLATES[0]["DIRS"], BASE_DIR / "bench" / "templates"]
