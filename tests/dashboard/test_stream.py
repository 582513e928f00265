"""What a browser's socket carries: the backfill first, then live frames, and only the newest
frame for a browser too slow to take them all — through the real ASGI application."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from dashboard.app.history import service_history
from dashboard.app.live import BACKFILL_TYPE, publish_frame
from dashboard.asgi import application
from tests.support.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = [(b"host", b"localhost:8000"), (b"origin", b"http://localhost:8000")]
NOW_MS = int(time.time() * 1000)


def frame(t: int, service: str = "inventory") -> dict[str, Any]:
    return {"type": "service.frame", "service": service, "t": t, "pods": [], "totals": {}}


@pytest.fixture(autouse=True)
def history() -> Iterator[None]:
    """Three frames of inventory a second apart, the newest a few seconds old."""
    service_history.cache_clear()
    for t in (NOW_MS - 3000, NOW_MS - 2000, NOW_MS - 1000):
        service_history().append(frame(t))  # type: ignore[arg-type]
    yield
    service_history.cache_clear()


def socket(cookie: bytes, query: str = "", app: Any = application) -> WebsocketCommunicator:
    path = f"/ws/services/inventory/{query}"
    return WebsocketCommunicator(app, path, headers=[*HEADERS, (b"cookie", cookie)])


async def test_the_backfill_comes_first_then_only_newer_live_frames(session_cookie: bytes) -> None:
    browser = socket(session_cookie)
    assert (await browser.connect())[0]
    backfill = await browser.receive_json_from()
    assert backfill["type"] == BACKFILL_TYPE
    assert [f["t"] for f in backfill["frames"]] == [NOW_MS - 3000, NOW_MS - 2000, NOW_MS - 1000]

    layer = get_channel_layer()
    await publish_frame(layer, frame(NOW_MS - 1000))  # built while the backfill was read
    await publish_frame(layer, frame(NOW_MS))
    assert (await browser.receive_json_from())["t"] == NOW_MS
    assert await browser.receive_nothing()
    await browser.disconnect()


async def test_a_reconnecting_page_gets_only_what_it_missed(session_cookie: bytes) -> None:
    browser = socket(session_cookie, f"?since={NOW_MS - 2000}")
    assert (await browser.connect())[0]
    backfill = await browser.receive_json_from()
    assert [f["t"] for f in backfill["frames"]] == [NOW_MS - 1000]
    await browser.disconnect()


async def test_a_mangled_since_gets_the_whole_backfill(session_cookie: bytes) -> None:
    browser = socket(session_cookie, "?since=yesterday")
    assert (await browser.connect())[0]
    assert len((await browser.receive_json_from())["frames"]) == 3
    await browser.disconnect()


def delivered(layer: Any, service: str) -> bool:
    """No frame waits in the in-memory layer for a consumer of `service`."""
    members = layer.groups.get(f"service.{service}", {})
    return not any(layer.channels[c].qsize() for c in members if c in layer.channels)


class SlowBrowser:
    """The ASGI app with a browser whose socket takes no data until `gate` opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def slow_send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                await self.gate.wait()
            await send(message)

        await application(scope, receive, slow_send)


async def test_a_slow_browser_gets_the_newest_frame_and_slows_no_one(
    session_cookie: bytes,
) -> None:
    slow_app = SlowBrowser()
    slow, fast = socket(session_cookie, app=slow_app), socket(session_cookie)
    assert (await slow.connect())[0]
    assert (await fast.connect())[0]
    await fast.receive_json_from()  # its backfill
    layer = get_channel_layer()

    live = [NOW_MS + i * 1000 for i in range(1, 11)]
    for t in live:
        await publish_frame(layer, frame(t))  # the collector is never kept waiting
    # The fast browser gets every frame while the slow one takes nothing.
    assert [(await fast.receive_json_from())["t"] for _ in live] == live
    await wait_for(lambda: delivered(layer, "inventory"), what="every frame to reach the consumers")

    slow_app.gate.set()
    assert (await slow.receive_json_from())["type"] == BACKFILL_TYPE
    assert (await slow.receive_json_from())["t"] == live[-1]  # the rest were coalesced
    assert await slow.receive_nothing()
    await slow.disconnect()
    await fast.disconnect()
