"""Recent frames per service, for a page's first paint.

A page that opens (or reconnects) asks for the last minutes of its service and
then follows the live frames. Frames are kept already encoded: they are sent
as they are, and a JSON string takes a fraction of the memory of the dicts it
came from (a 20-pod frame is a few KB; 900 of them are a few MB per service).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import NamedTuple

from dashboard.collector.frames import ServiceFrame, encode_frame

# 15 minutes at the default interval of 1 s.
DEFAULT_CAPACITY = 900


class Entry(NamedTuple):
    t_unix_ms: int
    json: str


class FrameHistory:
    """A ring buffer of encoded frames per service, `capacity` frames each.

    Appending is O(1) and evicts the oldest frame once full. Frames are kept in
    time order: one not later than the newest kept (the wall clock stepped
    back) replaces the frames from its time on.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._frames: dict[str, deque[Entry]] = {}

    @classmethod
    def for_window(cls, window_s: float = 900.0, interval_s: float = 1.0) -> FrameHistory:
        """Room for `window_s` of frames sent every `interval_s`."""
        if window_s <= 0 or interval_s <= 0:
            raise ValueError("window_s and interval_s must be positive")
        return cls(math.ceil(window_s / interval_s))

    def append(self, frame: ServiceFrame) -> None:
        self.append_encoded(frame["service"], frame["t"], encode_frame(frame))

    def append_encoded(self, service: str, t: int, encoded: str) -> None:
        """Keeps a frame already encoded (`encode_frame`) as it came."""
        frames = self._frames.setdefault(service, deque(maxlen=self.capacity))
        while frames and frames[-1].t_unix_ms >= t:
            frames.pop()
        frames.append(Entry(t, encoded))

    def since(self, service: str, t_unix_ms: int) -> list[str]:
        """Frames later than `t_unix_ms` (a page's last seen frame), oldest first."""
        newer: list[str] = []
        for entry in reversed(self._frames.get(service, ())):
            if entry.t_unix_ms <= t_unix_ms:
                break
            newer.append(entry.json)
        newer.reverse()
        return newer

    def latest(self, service: str, n: int) -> list[str]:
        """The last `n` frames (fewer if fewer are kept), oldest first."""
        if n <= 0:
            return []
        newest_first = list(islice(reversed(self._frames.get(service, ())), n))
        newest_first.reverse()
        return [e.json for e in newest_first]

    def newest_t(self, service: str) -> int | None:
        """The time of the newest frame kept, None when none is."""
        frames = self._frames.get(service)
        return frames[-1].t_unix_ms if frames else None

    def __len__(self) -> int:
        return sum(len(frames) for frames in self._frames.values())

    def count(self, service: str) -> int:
        return len(self._frames.get(service, ()))

    def services(self) -> list[str]:
        return sorted(self._frames)

    def forget(self, service: str) -> None:
        """Drops a service's frames, e.g. once it is no longer configured."""
        self._frames.pop(service, None)


def json_array(frames: Sequence[str]) -> str:
    """Encoded frames as one JSON array, without decoding them."""
    return "[" + ",".join(frames) + "]"
