"""The Celery application: settings under the ``CELERY_`` namespace, tasks autodiscovered.

Broker: Redis when ``REDIS_URL`` is set, else Celery's ``filesystem://`` transport under
``var/`` (see the Celery section of ``alem.settings``). Periodic schedules live in the
database (django-celery-beat); ``manage.py install_schedules`` installs the ones declared in
code.
"""

import os
from pathlib import Path

from celery import Celery, signals

from alem import observability

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "alem.settings")

app = Celery("alem")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def create_filesystem_broker_folders(sender, **kwargs):
    """The filesystem transport reads and writes its folders but never creates them."""
    if not str(sender.conf.broker_url).startswith("filesystem://"):
        return
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


# The request id travels from the web request into the tasks it queues (alem.observability).
signals.before_task_publish.connect(observability.task_publish_add_request_id, weak=False)
signals.task_prerun.connect(observability.task_prerun_set_request_id, weak=False)
signals.task_postrun.connect(observability.task_postrun_reset_request_id, weak=False)


@signals.setup_logging.connect(weak=False)
def keep_django_logging(**kwargs):
    """The worker logs as the web app does (settings.LOGGING: JSON lines with request ids),
    instead of Celery replacing the root logger's handlers with its own format."""
