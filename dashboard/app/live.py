"""The live stream's contract: group names, close codes and the group message.

The sending side (the collector, ``dashboard/collector/frames.py``) sends one frame
per service and interval with ``publish_frame``; ``ServiceConsumer`` relays it to each
browser watching the service unchanged, so a live frame has the same shape as the
frames a page gets from the history for its first paint.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from channels.layers import BaseChannelLayer

SERVICE_GROUP_PREFIX = "service."
# The first message on a service's socket: {"type": BACKFILL_TYPE, "frames": [frame, …]}.
BACKFILL_TYPE = "service.backfill"

# Close codes the browser sees (4000-4999 are the application's own).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_UNKNOWN_SERVICE = 4404


class ServiceFrameMessage(TypedDict):
    """What the stream relies on in a frame; the collector's ``ServiceFrame`` adds the
    per-pod series. ``type`` names the consumer's handler (``service_frame``)."""

    type: Literal["service.frame"]
    service: str


def service_group(service: str) -> str:
    """The channel layer group of one service's live stream."""
    return f"{SERVICE_GROUP_PREFIX}{service}"


async def publish_frame(layer: BaseChannelLayer, frame: ServiceFrameMessage) -> None:
    """Send one frame to every browser watching ``frame["service"]``, in any dashboard
    process that shares ``layer``. The frame must be JSON- and msgpack-encodable."""
    await layer.group_send(service_group(frame["service"]), dict(frame))
