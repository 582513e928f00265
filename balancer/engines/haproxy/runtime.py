"""HAProxy's runtime API over its unix socket: one command per connection.

In non-interactive mode HAProxy answers one command and closes the
connection, so a reply ends at EOF and no prompt needs parsing.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from dataclasses import dataclass

_READ_LIMIT_BYTES = 16 << 20


class RuntimeDown(ConnectionError):
    """The runtime API did not answer (HAProxy is down or restarting)."""


class CommandFailed(ValueError):
    """HAProxy answered a command with an error; the message has its words."""


@dataclass(frozen=True, slots=True)
class ServerStat:
    """A server's row of `show stat`: current sessions (streams), totals, and the average
    total time of its last 1024 calls."""

    backend: str
    server: str
    sessions_now: int
    sessions_total: int
    bytes_in: int
    bytes_out: int
    status: str
    # Calls sent on to another server after a failed connection to this one (`wredis`).
    redispatched: int = 0
    avg_time_ms: int = 0


class RuntimeApi:
    """Sends commands to the runtime API socket at `path`."""

    def __init__(self, path: str, *, timeout_s: float = 5.0) -> None:
        self.path = path
        self._timeout_s = timeout_s

    async def command(self, command: str) -> str:
        """HAProxy's whole reply; raises RuntimeDown when the socket does not answer."""
        try:
            return await asyncio.wait_for(self._command(command), self._timeout_s)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as err:
            raise RuntimeDown(f"haproxy runtime API at {self.path}: {err!r}") from None

    async def _command(self, command: str) -> str:
        reader, writer = await asyncio.open_unix_connection(self.path, limit=_READ_LIMIT_BYTES)
        try:
            writer.write(command.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace")
        finally:
            writer.close()

    async def expect(self, command: str, success: str = "") -> None:
        """Runs `command`; raises CommandFailed unless the reply is `success` (after
        stripping; "" for commands that answer nothing when they work)."""
        reply = (await self.command(command)).strip()
        if reply != success:
            raise CommandFailed(f"haproxy: {command!r}: {reply or 'no answer'}")

    async def server_stats(self, backend: str) -> dict[str, ServerStat]:
        """The servers of `backend` by name, from `show stat`."""
        reply = await self.command(f"show stat {backend} 4 -1")
        return {s.server: s for s in parse_stats(reply)}


def parse_stats(reply: str) -> list[ServerStat]:
    """The server rows of a `show stat` CSV reply."""
    text = reply.lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    stats = []
    for row in rows:
        if row.get("svname") in (None, "", "FRONTEND", "BACKEND"):
            continue
        stats.append(
            ServerStat(
                backend=row["pxname"],
                server=row["svname"],
                sessions_now=_int(row.get("scur")),
                sessions_total=_int(row.get("stot")),
                bytes_in=_int(row.get("bin")),
                bytes_out=_int(row.get("bout")),
                status=row.get("status") or "",
                redispatched=_int(row.get("wredis")),
                avg_time_ms=_int(row.get("ttime")),
            )
        )
    return stats


def _int(value: str | None) -> int:
    return int(value) if value else 0


_TABLE_ENTRY = re.compile(r"\bkey=(\S+)\b.*\bconn_cur=(\d+)")
_V4_MAPPED = "::ffff:"


def parse_peers(reply: str) -> list[tuple[str, int]]:
    """(peer IP, connections open now) from a `show table` reply of a stick table keyed by
    address (IPv4 peers as themselves, not as IPv4-mapped IPv6); peers with none left out."""
    peers = []
    for line in reply.splitlines():
        match = _TABLE_ENTRY.search(line)
        if match is None or match[2] == "0":
            continue
        peer = match[1]
        if peer.startswith(_V4_MAPPED) and "." in peer:
            peer = peer.removeprefix(_V4_MAPPED)
        peers.append((peer, int(match[2])))
    return peers
