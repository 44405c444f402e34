"""The example project: the app's pages, admin and API behind daphne, jobs run by Celery."""

from .celery import app as celery_app

__all__ = ["celery_app"]
