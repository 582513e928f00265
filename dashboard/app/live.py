"""The live stream's contract: group names, close codes and the group message.

The sending side (the collector, ``dashboard/collector/frames.py``) sends one frame
per service and interval with ``publish_frame``, encoded to JSON once: the group
message carries the text, and ``ServiceConsumer`` sends that text to each browser
watching the service as it is. A live frame thus has the same shape as the frames a
page gets in its backfill, and a hundred browsers cost a hundred socket writes, not
a hundred copies and encodings of the frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from channels.layers import BaseChannelLayer

from dashboard.collector.frames import FRAME_TYPE, encode_frame

SERVICE_GROUP_PREFIX = "service."
# The first message on a service's socket: {"type": BACKFILL_TYPE, "frames": [frame, …]}.
BACKFILL_TYPE = "service.backfill"

# Close codes the browser sees (4000-4999 are the application's own).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_UNKNOWN_SERVICE = 4404


class ServiceFrameMessage(TypedDict):
    """A frame on the channel layer. ``type`` names the consumer's handler
    (``service_frame``); ``json`` is the whole frame (``ServiceFrame``), encoded."""

    type: Literal["service.frame"]
    service: str
    t: int  # unix ms, as in the frame
    json: str


def service_group(service: str) -> str:
    """The channel layer group of one service's live stream."""
    return f"{SERVICE_GROUP_PREFIX}{service}"


def frame_message(frame: Mapping[str, Any]) -> ServiceFrameMessage:
    """The group message of a frame (a ``ServiceFrame``: ``service`` and ``t`` at least)."""
    return {
        "type": FRAME_TYPE,
        "service": frame["service"],
        "t": frame["t"],
        "json": encode_frame(frame),
    }


async def publish_frame(layer: BaseChannelLayer, frame: Mapping[str, Any]) -> None:
    """Send one frame to every browser watching ``frame["service"]``, in any dashboard
    process that shares ``layer``."""
    await layer.group_send(service_group(frame["service"]), dict(frame_message(frame)))
