"""Logging out ends the session's live streams too.

Each websocket consumer of a logged-in user joins the channel layer group of its
session (`session_group`); when that session logs out, the ``user_logged_out`` signal
sends the group a ``session.expired`` message and every open stream of the session
closes with 4401, which the page reads as "log in again". Without this, a tab left open
on another screen would keep streaming after its owner logged out.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpRequest

log = logging.getLogger(__name__)

SESSION_EXPIRED_TYPE = "session.expired"


def session_group(session_key: str) -> str:
    """The group of one session's streams. The key is hashed: group names live in Redis
    (with ``REDIS_URL``), and a session key there would be a login for whoever reads it."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def close_streams_on_logout(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``user_logged_out`` receiver: tells the session's streams to close. Runs before the
    session is flushed, so its key is still the one the streams joined with."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    layer = get_channel_layer()
    if not key or layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group(key), {"type": SESSION_EXPIRED_TYPE})
    except Exception:  # a channel layer down must not make logging out fail
        log.warning("could not close the live streams of a logged-out session", exc_info=True)
