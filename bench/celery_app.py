"""The Celery app of the benchmark: ``celery -A bench.celery_app worker`` (bench.settings).

The broker is the bench's redis-server (``$DRS_BENCH_REDIS``, read by bench.settings); the
bench process imports this module too, so that ``submit_job_to_server.delay`` sends there.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

app = Celery("bench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.set_default()
app.autodiscover_tasks()
