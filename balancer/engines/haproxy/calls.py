"""HAProxy's call logs, read by Ballast over two unix sockets.

Logging every call cost more CPU per call than HAProxy's own relaying (a
syslog line formatted, sent and woken up for in Python, per call), and the
kernel's queue of a unix datagram socket (`net.unix.max_dgram_qlen`, 10 by
default) dropped lines under load. So HAProxy logs, in `LOG_FORMAT` (backend,
server, HTTP status, total time in ms, bytes in and out, termination state,
the `grpc-status` response header):

- to the *error log*, every call that is not plainly OK (`option
  log-separate-errors` puts HAProxy's own errors, client aborts, retries and
  5xx at level `err`; `ERROR_RULE` adds non-200 answers and trailers-only
  answers with a `grpc-status` other than 0), and only those: errors are
  counted and fed to outlier detection one by one. It goes through an HAProxy
  `ring` (`ERROR_RING_BYTES` of lines) forwarded over a unix stream socket:
  no line is dropped while Ballast catches up with a burst of errors (a lost
  error line would count as OK);
- to the *latency log* (a datagram socket), one call in `LATENCY_SAMPLE`
  (HAProxy's `sample`), OK or not: the latency histogram, each line weighing
  `LATENCY_SAMPLE` calls. A line lost here only thins the sample.

OK calls are counted from `show stat` (see `engine.ServedCounts`). What the
line can say is less than what the embedded engine sees: HAProxy 2.6's log
cannot read trailers, so `grpc-status` is seen only in trailers-only answers
(an error before any header was sent); an error sent in trailers after headers
counts as OK. HAProxy's own failures (no server, connect refused: HTTP 503)
and client aborts (termination state `C…`) are exact.
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
# The latency log carries one call in this many (HAProxy's `log … sample 1:N`).
LATENCY_SAMPLE = 10
# Raises a call's log line to level `err` (the error log): HTTP answers other than 200,
# and trailers-only answers whose grpc-status is not 0.
ERROR_RULE = (
    "http-response set-log-level err if !{ status 200 }"
    " || { res.hdr(grpc-status) -m found } !{ res.hdr(grpc-status) -m str 0 }"
)
# The error log's ring in HAProxy: ~20,000 error lines wait there while Ballast is busy.
ERROR_RING_BYTES = 1 << 20
OK, _CANCELLED, _UNKNOWN = 0, 1, 2
_RECEIVE_BUFFER_BYTES = 4 << 20
# gRPC's HTTP-to-status mapping (doc/http-grpc-status-mapping.md), for answers without one.
_HTTP_CODES = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as its log line tells it; `http_status` 0 when HAProxy never got one."""

    backend: str
    server: str
    code: int
    http_status: int
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
            http_status=max(0, int(status)),
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
        return OK
    return _HTTP_CODES.get(http_status, _UNKNOWN)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, sink: Callable[[CallRecord], None]) -> None:
        self._sink = sink

    def datagram_received(self, data: bytes, addr: object) -> None:
        record = parse(data.decode(errors="replace"))
        if record is not None:
            self._sink(record)


async def listen(path: str, sink: Callable[[CallRecord], None]) -> asyncio.DatagramTransport:
    """Receives a call log at the unix datagram socket `path`; each call → `sink`."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # Bursts of errors come faster than one loop turn; the kernel holds some meanwhile.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER_BYTES)
    sock.bind(path)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Receiver(sink), sock=sock)
    return transport


async def listen_stream(path: str, sink: Callable[[CallRecord], None]) -> asyncio.Server:
    """Receives a call log forwarded by an HAProxy `ring` to the unix stream socket
    `path` (one line per call; each HAProxy process connects on its own); each call →
    `sink`."""

    async def read_lines(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                record = parse(line.decode(errors="replace"))
                if record is not None:
                    sink(record)
        except (ConnectionError, ValueError):  # HAProxy went away, or a line over the limit
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(read_lines, path)
