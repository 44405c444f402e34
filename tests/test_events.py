"""Broadcasts (events.py) through a real redis channel layer."""

from __future__ import annotations

import logging
import threading

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer

from django_remote_submission import events
from django_remote_submission.conf import redis_channel_layer


@pytest.fixture
def redis_layer(settings, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/3"
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer(url, capacity=1000)}
    channel_layers.backends.clear()
    yield get_channel_layer()
    channel_layers.backends.clear()
    events._event_loop.forget()  # its loop holds connections of this layer


def test_hundreds_of_concurrent_broadcasts_all_arrive(redis_layer, caplog):
    """Jobs of a busy worker broadcast at once: each message arrives, none is dropped with
    'Too many connections' (the layer's pool is limited)."""
    layer = redis_layer
    count = 300

    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)("drs.test", channel)

    async def receive_all() -> list[int]:
        return sorted([(await layer.receive(channel))["n"] for _ in range(count)])

    start = threading.Barrier(count)

    def broadcast(i: int) -> None:
        start.wait()
        events._send(("drs.test", {"type": "drs.test", "n": i}))

    with caplog.at_level(logging.WARNING, logger="django_remote_submission.events"):
        threads = [threading.Thread(target=broadcast, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert [r.getMessage() for r in caplog.records] == []
    assert async_to_sync(receive_all)() == list(range(count))
