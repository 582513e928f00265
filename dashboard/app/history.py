"""The dashboard process's frame history, which a service page reads for its first paint.

One per process: the collector embedded in the dashboard process appends every frame
it builds, and the views and the websocket backfill read the last ``HISTORY_WINDOW_S``
of it. Tests append frames to it and clear it with
``service_history.cache_clear()``.
"""

from __future__ import annotations

import functools

from django.conf import settings

from dashboard.collector.history import FrameHistory

# What a page shows on load: the last 15 minutes.
HISTORY_WINDOW_S = 900.0


@functools.cache
def service_history() -> FrameHistory:
    """The process-wide history, room for ``HISTORY_WINDOW_S`` at the collector's interval."""
    return FrameHistory.for_window(HISTORY_WINDOW_S, settings.BALLAST_COLLECTOR_INTERVAL_MS / 1000)


def recent_frames(service: str, now_unix_ms: int, *, after_unix_ms: int = 0) -> list[str]:
    """The encoded frames of `service` from the last ``HISTORY_WINDOW_S`` that are later
    than `after_unix_ms` (what a page already holds), oldest first.

    Measured from `now_unix_ms`, not from the newest frame: a stopped collector's
    frames age out instead of passing for the last minutes.
    """
    window_start = now_unix_ms - int(HISTORY_WINDOW_S * 1000)
    return service_history().since(service, max(window_start, after_unix_ms))
