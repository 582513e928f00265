"""The live stream over a real Redis channel layer, as several dashboard processes share.

Each test gets its own `redis-server` (the `redis_url` fixture) and the layer that
`channel_layer_settings` builds for its URL, so what REDIS_URL selects in production is
what runs here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.test import override_settings
from django.utils.module_loading import import_string

from dashboard.app.live import BACKFILL_TYPE, frame_message, publish_frame, service_group
from dashboard.asgi import application
from dashboard.env import channel_layer_settings

RECEIVE_TIMEOUT_S = 5.0
ORIGIN = (b"origin", b"http://localhost:8000")
HOST = (b"host", b"localhost:8000")


def make_layer(redis_url: str) -> RedisChannelLayer:
    """A layer of its own, as another dashboard process would build from REDIS_URL."""
    config = channel_layer_settings(redis_url)
    layer = import_string(config["BACKEND"])(**config["CONFIG"])
    assert isinstance(layer, RedisChannelLayer)
    return layer


@pytest.fixture
async def redis_layer(redis_url: str) -> AsyncIterator[RedisChannelLayer]:
    """The default layer, on Redis, for this test; its connections closed at the end."""
    with override_settings(CHANNEL_LAYERS={"default": channel_layer_settings(redis_url)}):
        # Channels drops its cached layers when CHANNEL_LAYERS changes; a layer left
        # from an earlier test would be the in-memory one.
        assert not channel_layers.backends
        layer = get_channel_layer()
        assert isinstance(layer, RedisChannelLayer)
        yield layer
        await layer.close_pools()
    assert not channel_layers.backends


async def receive(layer: RedisChannelLayer, channel: str) -> dict[str, Any]:
    async with asyncio.timeout(RECEIVE_TIMEOUT_S):
        message: dict[str, Any] = await layer.receive(channel)
        return message


async def test_it_delivers_a_group_message_through_redis(redis_layer: RedisChannelLayer) -> None:
    channel = await redis_layer.new_channel()
    await redis_layer.group_add(service_group("inventory"), channel)

    await redis_layer.group_send(service_group("inventory"), {"type": "hello", "n": 1})

    assert await receive(redis_layer, channel) == {"type": "hello", "n": 1}


@pytest.mark.django_db(transaction=True)
async def test_it_relays_a_published_frame_to_an_operator_through_redis(
    redis_layer: RedisChannelLayer, session_cookie: bytes
) -> None:
    socket = WebsocketCommunicator(
        application,
        "/ws/services/inventory/",
        headers=[HOST, ORIGIN, (b"cookie", session_cookie)],
    )
    assert (await socket.connect())[0]
    backfill = await socket.receive_json_from(timeout=RECEIVE_TIMEOUT_S)
    assert backfill["type"] == BACKFILL_TYPE
    t = int(time.time() * 1000)
    frame = {"type": "service.frame", "service": "inventory", "t": t, "pods": [{"name": "a"}]}

    await publish_frame(redis_layer, frame)

    assert await socket.receive_json_from(timeout=RECEIVE_TIMEOUT_S) == frame
    await socket.disconnect()


async def test_it_reaches_a_group_member_in_another_process(redis_url: str) -> None:
    watching, collecting = make_layer(redis_url), make_layer(redis_url)
    try:
        channel = await watching.new_channel()
        await watching.group_add(service_group("payments"), channel)
        frame = {"type": "service.frame", "service": "payments", "t": 7}

        await publish_frame(collecting, frame)

        assert await receive(watching, channel) == frame_message(frame)
    finally:
        await watching.close_pools()
        await collecting.close_pools()
