"""Websocket routes of the app, for a project's ASGI application.

    from django_remote_submission.routing import websocket_urlpatterns
    application = ProtocolTypeRouter({
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)), ...})

``ws/job-user/``: the user's jobs and their status changes; ``ws/job-log/<job_pk>/``: a job's
log and status (``?after=<log id>`` resumes). See ``consumers`` for the messages.

``routing.application``, 2.1.0's ready-made websocket application (``ASGI_APPLICATION`` or
routed from a project's router), still works and warns that it is deprecated: it serves
websockets only, without checking the Origin of the page (``AllowedHostsOriginValidator``).
"""

import warnings

from django.urls import path

from .consumers import JobLogConsumer, JobUserConsumer

websocket_urlpatterns = [
    path("ws/job-user/", JobUserConsumer.as_asgi(), name="drs-ws-job-user"),
    path("ws/job-log/<int:job_pk>/", JobLogConsumer.as_asgi(), name="drs-ws-job-log"),
]


def __getattr__(name: str):
    if name != "application":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        "django_remote_submission.routing.application is deprecated: route "
        "websocket_urlpatterns in the project's asgi.py (see the README's Quickstart).",
        DeprecationWarning,
        stacklevel=2,
    )
    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter

    return ProtocolTypeRouter({"websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns))})
