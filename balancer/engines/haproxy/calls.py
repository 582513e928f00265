"""HAProxy's per-call log stream, read by Ballast over a unix datagram socket.

Every finished call (HTTP/2 stream) is one datagram in `LOG_FORMAT`: backend,
server, HTTP status, total time (ms), bytes in and out, termination state and
the `grpc-status` response header. Ballast turns each into the same record
the embedded engine makes per call, so snapshots, outlier detection and the
load estimate work alike.

What the line can say is less than what the embedded engine sees: HAProxy
2.6's log cannot read trailers, so `grpc-status` is seen only in trailers-only
answers (an error before any header was sent); an error sent in trailers after
headers is counted OK. HAProxy's own failures (no server, connect refused:
HTTP 503) and client aborts (termination state `C…`) are exact.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# One line per call; `|` never occurs in HAProxy names or these fields.
LOG_FORMAT = "%b|%s|%ST|%Ta|%U|%B|%tsc|%[capture.res.hdr(0)]"
_FIELDS = 8
_OK, _CANCELLED, _UNKNOWN = 0, 1, 2
_RECEIVE_BUFFER_BYTES = 4 << 20
# gRPC's HTTP-to-status mapping (doc/http-grpc-status-mapping.md), for answers without one.
_HTTP_CODES = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}


@dataclass(frozen=True, slots=True)
class CallRecord:
    backend: str
    server: str
    code: int
    latency_s: float
    received_bytes: int
    sent_bytes: int


def parse(line: str) -> CallRecord | None:
    """The call a log line describes; None for anything else (HAProxy's own notices)."""
    fields = line.rstrip("\n").split("|")
    if len(fields) != _FIELDS:
        return None
    backend, server, status, total_ms, received, sent, termination, grpc_status = fields
    try:
        return CallRecord(
            backend=backend,
            server=server,
            code=grpc_code(int(status), grpc_status, termination),
            latency_s=max(0, int(total_ms)) / 1000,
            received_bytes=int(received),
            sent_bytes=int(sent),
        )
    except ValueError:
        return None


def grpc_code(http_status: int, grpc_status: str, termination: str) -> int:
    """The call's gRPC status code as well as the log line tells it."""
    if grpc_status.isdigit() and int(grpc_status) <= 16:
        return int(grpc_status)
    if termination.startswith("C"):  # the client went away (cancelled, or its deadline)
        return _CANCELLED
    if http_status == 200:
        return _OK
    return _HTTP_CODES.get(http_status, _UNKNOWN)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, sink: Callable[[CallRecord], None]) -> None:
        self._sink = sink

    def datagram_received(self, data: bytes, addr: object) -> None:
        record = parse(data.decode(errors="replace"))
        if record is not None:
            self._sink(record)


async def listen(path: str, sink: Callable[[CallRecord], None]) -> asyncio.DatagramTransport:
    """Receives the log stream at the unix datagram socket `path`; each call → `sink`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # Bursts of short calls come faster than one loop turn; the kernel holds them meanwhile.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
    sock.bind(path)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(sink), sock=sock)
    return transport
