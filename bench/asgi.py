"""ASGI app for the websocket row, served by daphne: ``ws/jobs/<pk>/`` streams a job's logs.

    python -m daphne -b 127.0.0.1 -p 8000 bench.asgi:application   # DJANGO_SETTINGS_MODULE set

A minimal stand-in for the app's own consumer: it joins ``events.job_group(pk)`` and
forwards every message the runner broadcasts (``drs.logs``, ``drs.status``) as JSON.
"""

from __future__ import annotations

import json

import django

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from django_remote_submission import events  # noqa: E402


class JobLogConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.group = events.job_group(self.scope["url_route"]["kwargs"]["pk"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def drs_logs(self, event: dict) -> None:
        await self.send(text_data=json.dumps(event))

    drs_status = drs_logs


application = ProtocolTypeRouter(
    {"websocket": URLRouter([path("ws/jobs/<int:pk>/", JobLogConsumer.as_asgi())])}
)
