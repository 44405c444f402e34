"""ASGI app for the websocket row, served by daphne (DJANGO_SETTINGS_MODULE=bench.settings):

    python -m daphne -b 127.0.0.1 -p 8000 bench.asgi:application

Serves the app's own websocket routes (``django_remote_submission.routing``) behind
Channels' session auth, as a project would. Should the app have no consumer, a minimal
stand-in serves ``ws/job-log/<pk>/``: it joins ``events.job_group(pk)`` and forwards each
stored batch as ``{"type": "logs", "job": pk, "logs": [...]}``, the app's format.
"""

from __future__ import annotations

import django

django.setup()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import AsyncJsonWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from django_remote_submission import events  # noqa: E402


class StandInLogConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group = events.job_group(self.scope["url_route"]["kwargs"]["job_pk"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def drs_logs(self, event: dict) -> None:
        await self.send_json({"type": "logs", "job": event["job"], "logs": event["logs"]})

    async def drs_status(self, event: dict) -> None:
        await self.send_json({"type": "status", "job": event["job"]})


try:
    from django_remote_submission.routing import websocket_urlpatterns
except ImportError:
    websocket_urlpatterns = [path("ws/job-log/<int:job_pk>/", StandInLogConsumer.as_asgi())]

application = ProtocolTypeRouter(
    {"websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns))}
)
