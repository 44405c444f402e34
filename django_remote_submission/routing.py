"""Websocket routes of the app, for a project's ASGI application.

    from django_remote_submission.routing import websocket_urlpatterns
    application = ProtocolTypeRouter({
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), ...})

``ws/job-user/``: the user's jobs and their status changes; ``ws/job-log/<job_pk>/``: a job's
log and status (``?after=<log id>`` resumes). See ``consumers`` for the messages.
"""

from django.urls import path

from .consumers import JobLogConsumer, JobUserConsumer

websocket_urlpatterns = [
    path("ws/job-user/", JobUserConsumer.as_asgi(), name="drs-ws-job-user"),
    path("ws/job-log/<int:job_pk>/", JobLogConsumer.as_asgi(), name="drs-ws-job-log"),
]
