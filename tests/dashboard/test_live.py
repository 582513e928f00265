"""The live stream through the real ASGI application: origin check, session auth, groups."""

from __future__ import annotations

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import WebsocketCommunicator

from dashboard.app.live import (
    BACKFILL_TYPE,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNKNOWN_SERVICE,
    publish_frame,
    service_group,
)
from dashboard.asgi import application

# Async tests reach the database from another thread: the rows must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost:8000")
HOST = (b"host", b"localhost:8000")
EMPTY_BACKFILL = {"type": BACKFILL_TYPE, "frames": []}


def communicator(path: str, *headers: tuple[bytes, bytes]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[HOST, *headers])


async def test_it_closes_an_anonymous_socket_with_4401() -> None:
    socket = communicator("/ws/services/inventory/", ORIGIN)
    connected, _ = await socket.connect()
    assert connected
    assert await socket.receive_output() == {
        "type": "websocket.close",
        "code": CLOSE_UNAUTHENTICATED,
    }
    await socket.wait()


async def test_it_refuses_a_foreign_origin(session_cookie: bytes) -> None:
    socket = communicator(
        "/ws/services/inventory/", (b"origin", b"http://evil.example"), (b"cookie", session_cookie)
    )
    connected, _ = await socket.connect()
    assert not connected
    await socket.wait()


async def test_it_refuses_a_missing_origin(session_cookie: bytes) -> None:
    socket = communicator("/ws/services/inventory/", (b"cookie", session_cookie))
    connected, _ = await socket.connect()
    assert not connected
    await socket.wait()


async def test_it_closes_a_socket_for_an_unknown_service_with_4404(session_cookie: bytes) -> None:
    socket = communicator("/ws/services/nosuch/", ORIGIN, (b"cookie", session_cookie))
    connected, _ = await socket.connect()
    assert connected
    assert await socket.receive_output() == {
        "type": "websocket.close",
        "code": CLOSE_UNKNOWN_SERVICE,
    }
    await socket.wait()


async def test_it_relays_frames_of_its_service_to_an_operator(session_cookie: bytes) -> None:
    inventory = communicator("/ws/services/inventory/", ORIGIN, (b"cookie", session_cookie))
    payments = communicator("/ws/services/payments/", ORIGIN, (b"cookie", session_cookie))
    assert (await inventory.connect())[0]
    assert (await payments.connect())[0]
    assert await inventory.receive_json_from() == EMPTY_BACKFILL
    assert await payments.receive_json_from() == EMPTY_BACKFILL
    layer = get_channel_layer()
    assert layer is not None

    frame = {"type": "service.frame", "service": "inventory", "t": 1, "pods": [{"name": "a"}]}
    await publish_frame(layer, frame)

    assert await inventory.receive_json_from() == frame
    assert await payments.receive_nothing()
    await inventory.disconnect()
    await payments.disconnect()


async def test_it_leaves_the_group_on_disconnect(session_cookie: bytes) -> None:
    socket = communicator("/ws/services/inventory/", ORIGIN, (b"cookie", session_cookie))
    assert (await socket.connect())[0]
    layer = get_channel_layer()
    assert layer is not None
    members = layer.groups[service_group("inventory")]
    assert len(members) == 1
    await socket.disconnect()
    assert service_group("inventory") not in layer.groups


async def test_it_ignores_what_the_browser_sends(session_cookie: bytes) -> None:
    socket = communicator("/ws/services/inventory/", ORIGIN, (b"cookie", session_cookie))
    assert (await socket.connect())[0]
    assert await socket.receive_json_from() == EMPTY_BACKFILL
    await socket.send_to(text_data="not json")
    assert await socket.receive_nothing()
    await socket.disconnect()


async def test_it_sends_the_frame_to_the_service_group() -> None:
    layer = InMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("service.payments", channel)
    frame = {"type": "service.frame", "service": "payments", "t": 7, "pods": [{"pod": "a"}]}

    await publish_frame(layer, frame)

    # Encoded once, for every browser: the text is the frame.
    assert await layer.receive(channel) == {
        "type": "service.frame",
        "service": "payments",
        "t": 7,
        "json": '{"type":"service.frame","service":"payments","t":7,"pods":[{"pod":"a"}]}',
    }
