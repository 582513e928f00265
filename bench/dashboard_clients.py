"""Websocket clients for the dashboard fan-out benchmark: K browsers' worth of live streams.

Driven by JSON lines, like ``loadgen.py --serve``. The first stdin line is the spec
(``ClientSpec``'s fields: the websocket URL, the page origin, the session cookie, how many
clients and how many pods a frame must carry). The program opens that many connections
at once, all in one event loop, and prints ``{"event": "ready", ...}`` once every client
has received a frame with the expected pods (or ``{"event": "error", ...}`` and exits 1).
Then each ``start`` line resets the tallies, and each ``stop`` line answers with
``{"event": "result", ...}``: per client the frames received, the latencies of all frames
(``time.time_ns()`` on receipt − the frame's ``t``, the unix ms the collector stamped it
with, on the same machine clock), frames whose pod count was wrong, and clients the
server closed. EOF closes every connection and exits.

Run by ``dashboard_fanout.py``; not useful on its own.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

READY_TIMEOUT_S = 20.0
NS_PER_MS = 1_000_000
FRAME_TYPE = "service.frame"


@dataclass(frozen=True)
class ClientSpec:
    url: str
    origin: str
    cookie: str
    clients: int
    pods: int

    def __post_init__(self) -> None:
        if self.clients < 1 or self.pods < 1:
            raise ValueError("clients and pods must be >= 1")


@dataclass
class ClientTally:
    """What one client saw since the last ``start``; ``first_frame`` is set once ever."""

    latencies_ns: list[int] = field(default_factory=list)
    wrong_pods: int = 0
    closed: str | None = None
    first_frame: asyncio.Event = field(default_factory=asyncio.Event)

    def reset(self) -> None:
        self.latencies_ns, self.wrong_pods = [], 0


def record(tally: ClientTally, message: str | bytes, received_ns: int, pods: int) -> None:
    """Tallies a live frame; other messages (the backfill sent on connect) are skipped."""
    frame = json.loads(message)
    if frame.get("type") != FRAME_TYPE:
        return
    tally.latencies_ns.append(received_ns - int(frame["t"]) * NS_PER_MS)
    if len(frame["pods"]) == pods:
        tally.first_frame.set()
    else:
        tally.wrong_pods += 1


async def follow(connection: ClientConnection, tally: ClientTally, pods: int) -> None:
    """Reads frames until the connection closes; a close or a bad frame is recorded as the
    reason this client stopped, never raised."""
    try:
        async for message in connection:
            record(tally, message, time.time_ns(), pods)
    except websockets.ConnectionClosed as closed:
        tally.closed = f"closed by the server: {closed}"
    except (ValueError, KeyError, TypeError) as error:
        tally.closed = f"bad frame: {type(error).__name__}: {error}"
    else:
        tally.closed = "closed by the server"


async def connect(spec: ClientSpec) -> ClientConnection:
    return await websockets.connect(
        spec.url,
        origin=websockets.Origin(spec.origin),
        additional_headers={"Cookie": f"sessionid={spec.cookie}"},
        # The dashboard serves without compression; do not offer it.
        compression=None,
        open_timeout=READY_TIMEOUT_S,
    )


def result(tallies: list[ClientTally]) -> dict[str, Any]:
    return {
        "event": "result",
        "frames": [len(tally.latencies_ns) for tally in tallies],
        "latencies_ns": [ns for tally in tallies for ns in tally.latencies_ns],
        "wrong_pods": sum(tally.wrong_pods for tally in tallies),
        "closed": [tally.closed for tally in tallies if tally.closed],
    }


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def wait_for_first_frames(tallies: list[ClientTally], pods: int) -> None:
    """Returns once every client has had a frame with ``pods`` pods; raises TimeoutError."""
    waits = (tally.first_frame.wait() for tally in tallies)
    try:
        await asyncio.wait_for(asyncio.gather(*waits), READY_TIMEOUT_S)
    except TimeoutError:
        waiting = sum(1 for tally in tallies if not tally.first_frame.is_set())
        closed = sorted({tally.closed for tally in tallies if tally.closed})
        raise TimeoutError(
            f"{waiting} of {len(tallies)} clients got no frame with {pods} pods within"
            f" {READY_TIMEOUT_S:.0f} s; closed: {closed or 'none'}"
        ) from None


async def answer_commands(tallies: list[ClientTally]) -> None:
    """``start`` resets the tallies, ``stop`` prints the result; returns on EOF."""
    while line := await asyncio.to_thread(sys.stdin.readline):
        command = line.strip()
        if command == "start":
            for tally in tallies:
                tally.reset()
        elif command == "stop":
            emit(result(tallies))


async def run(spec: ClientSpec) -> None:
    started_s = time.monotonic()
    connections = await asyncio.gather(*(connect(spec) for _ in range(spec.clients)))
    tallies = [ClientTally() for _ in connections]
    readers = [
        asyncio.create_task(follow(connection, tally, spec.pods))
        for connection, tally in zip(connections, tallies, strict=True)
    ]
    try:
        await wait_for_first_frames(tallies, spec.pods)
        emit({"event": "ready", "connect_s": round(time.monotonic() - started_s, 3)})
        await answer_commands(tallies)
    finally:
        await asyncio.gather(*(connection.close() for connection in connections))
        for reader in readers:
            reader.cancel()


def main() -> int:
    spec = ClientSpec(**json.loads(sys.stdin.readline()))
    try:
        asyncio.run(run(spec))
    except (OSError, TimeoutError, websockets.InvalidHandshake) as error:
        emit({"event": "error", "message": f"{type(error).__name__}: {error}"})
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
