"""The project's URLs, plus the bare yardstick views under ``/bare/`` (``bench/bare.py``)."""

from django.urls import include, path

from bench import bare

urlpatterns = [
    path("bare/", include(bare.urlpatterns)),
    path("", include("alem.urls")),
]
