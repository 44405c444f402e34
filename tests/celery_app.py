"""The Celery app of the test suite: ``celery -A tests.celery_app worker``.

Settings come from ``tests.settings`` (``CELERY_*``); the broker and result backend are the
throwaway redis-server of the run, passed as ``CELERY_BROKER_URL`` in the environment.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.set_default()
app.autodiscover_tasks()
