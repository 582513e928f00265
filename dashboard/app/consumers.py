"""Websocket consumers: one per live stream."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from dashboard.app.live import (
    CLOSE_UNAUTHENTICATED,
    CLOSE_UNKNOWN_SERVICE,
    ServiceFrameMessage,
    service_group,
)


class ServiceConsumer(AsyncJsonWebsocketConsumer):
    """The live stream of one balancer service, at ``ws/services/<service>/``.

    Refusals accept and then close with an application code, so the page can tell
    "log in again" (4401) and "no such service" (4404) from a network failure (a
    refused handshake reaches browser code only as 1006). Nothing is sent first.
    """

    service: str = ""
    group: str = ""

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
            await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        """The stream is one-way: what the browser sends is ignored, never decoded."""

    async def service_frame(self, message: ServiceFrameMessage) -> None:
        """Relay a frame of this service as it came (``type`` included)."""
        await self.send_json(message)
