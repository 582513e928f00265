"""Websocket consumers: one per live stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from dashboard.app.history import recent_frames, service_history
from dashboard.app.live import (
    BACKFILL_TYPE,
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNKNOWN_SERVICE,
    ServiceFrameMessage,
    service_group,
)
from dashboard.app.sessions import session_group
from dashboard.collector.history import json_array

log = logging.getLogger(__name__)


class ServiceConsumer(AsyncJsonWebsocketConsumer):
    """The live stream of one balancer service, at ``ws/services/<service>/?since=<t>``.

    On connect it joins the service's group, then sends the backfill — one
    ``service.backfill`` message with the frames of the last 15 minutes newer than
    ``since`` (the last frame a reconnecting page holds; 0 or absent for all) — and
    then every live ``service.frame`` newer than those.

    A slow browser never holds up the others or the collector: frames are handed
    to a sender task, and while it is still writing one to the socket only the
    newest frame that arrives waits; older ones are dropped (`dropped` counts
    them). Frames are whole figures, not deltas, so a dropped frame is a gap in
    the charts, never a wrong number.

    Refusals accept and then close with an application code, so the page can tell
    "log in again" (4401) and "no such service" (4404) from a network failure (a
    refused handshake reaches browser code only as 1006). Logging out closes the
    session's streams with 4401 too (``app/sessions.py``).
    """

    service: str = ""
    group: str = ""
    session_group: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dropped = 0
        self._last_t = 0  # the newest frame queued for this browser
        self._backfill: str | None = None
        self._latest: ServiceFrameMessage | None = None
        self._sender: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        service = self.scope["url_route"]["kwargs"]["service"]
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
        elif service not in settings.BALLAST_SERVICES:
            await self.close(code=CLOSE_UNKNOWN_SERVICE)
        else:
            self.service = service
            self.group = service_group(service)
            session_key = getattr(self.scope.get("session"), "session_key", None)
            if session_key:
                self.session_group = session_group(session_key)
                await self.channel_layer.group_add(self.session_group, self.channel_name)
            # Join first: a frame built while the backfill is read is not lost.
            await self.channel_layer.group_add(self.group, self.channel_name)
            self._queue_backfill(self._since())

    def _since(self) -> int:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            return max(0, int(query.get("since", ["0"])[-1]))
        except ValueError:
            return 0  # a mangled parameter gets the whole backfill, not an error

    def _queue_backfill(self, since: int) -> None:
        frames = recent_frames(self.service, int(time.time() * 1000), after_unix_ms=since)
        self._last_t = max(since, service_history().newest_t(self.service) or 0)
        self._backfill = f'{{"type":"{BACKFILL_TYPE}","frames":{json_array(frames)}}}'
        self._kick()

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if self.session_group:
            await self.channel_layer.group_discard(self.session_group, self.channel_name)
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """The stream is one-way: what the browser sends is ignored, never decoded."""

    async def session_expired(self, message: dict[str, Any]) -> None:
        """The session logged out: the page is told to log in again."""
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def service_frame(self, message: ServiceFrameMessage) -> None:
        """Queues a frame of this service for the browser."""
        t = message["t"]
        if t <= self._last_t:
            return  # already sent with the backfill
        self._last_t = t
        if self._latest is not None:
            self.dropped += 1
        self._latest = message
        self._kick()

    def _kick(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_queued())

    async def _send_queued(self) -> None:
        """Sends the backfill, then the newest frame, until nothing waits."""
        try:
            if self._backfill is not None:
                text, self._backfill = self._backfill, None
                await self.send(text_data=text)
            while self._latest is not None:
                message, self._latest = self._latest, None
                await self.send(text_data=message["json"])
        except Exception:  # the browser went away mid-send; disconnect() follows
            log.debug("sending to a browser of %s failed", self.service, exc_info=True)
