"""OK calls and bytes per HAProxy server, from `show stat` instead of a log line per call.

HAProxy logs only calls that are not OK (calls.py); everything else a server's
row of `show stat` says: the calls that ended there are `stot − scur − wredis`
(started, minus in flight, minus those sent on to another server after a failed
connection), and the OK ones are those minus the calls the error log reported
for that server. An error's log line comes a moment after its call's end shows
in `show stat`, so the OK count uses the previous read's ended calls: no read
counts as OK a call whose error line is still on its way, and the count runs
one read (1 s) behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from balancer.engines.haproxy.runtime import ServerStat


@dataclass(frozen=True, slots=True)
class Increments:
    """What one read adds for a server: OK calls (for the counters), calls that ended
    OK since the previous read (as far as the error log has told, for outlier
    detection), and bytes."""

    ok_calls: int
    ok_in_period: int
    bytes_in: int
    bytes_out: int


@dataclass(slots=True)
class _Server:
    ended: int = 0
    not_ok: int = 0
    not_ok_in_period: int = 0
    ok_counted: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class ServedCounts:
    """Turns servers' cumulative `show stat` counters into increments, per (backend,
    server). `reset` when a new HAProxy process starts (its counters start at 0)."""

    def __init__(self) -> None:
        self._servers: dict[tuple[str, str], _Server] = {}

    def reset(self) -> None:
        self._servers.clear()

    def forget(self, backend: str, server: str) -> None:
        """Drops a deleted server's figures, so nothing grows with endpoint churn."""
        self._servers.pop((backend, server), None)

    def not_ok(self, backend: str, server: str) -> None:
        """The error log reported one of the server's calls (not OK)."""
        figures = self._servers.setdefault((backend, server), _Server())
        figures.not_ok += 1
        figures.not_ok_in_period += 1

    def update(self, stat: ServerStat, *, final: bool = False) -> Increments:
        """The increments since the previous read; `final` (the server is about to be
        deleted, its calls long over) counts OK up to this read's ended calls."""
        figures = self._servers.setdefault((stat.backend, stat.server), _Server())
        ended = max(0, stat.sessions_total - stat.sessions_now - stat.redispatched)
        ok_in_period = max(0, ended - figures.ended - figures.not_ok_in_period)
        counted_to = ended if final else figures.ended
        ok = max(0, counted_to - figures.not_ok - figures.ok_counted)
        increments = Increments(
            ok_calls=ok,
            ok_in_period=ok_in_period,
            bytes_in=_grown(stat.bytes_in, figures.bytes_in),
            bytes_out=_grown(stat.bytes_out, figures.bytes_out),
        )
        figures.ended = ended
        figures.not_ok_in_period = 0
        figures.ok_counted += ok
        figures.bytes_in, figures.bytes_out = stat.bytes_in, stat.bytes_out
        return increments


def _grown(now: int, before: int) -> int:
    return max(0, now - before)
