"""A streaming call's request messages: read once from the client, sent to each try.

One reader task reads the client's messages for the whole call (never
cancelled mid-read while tries come and go: grpc.aio allows one read at a
time) and hands them over one at a time, so flow control still reaches the
client. The messages sent so far are kept for a retry to replay, up to
`buffer_bytes` per call; past it, or once anything of a response went back to
the client (`commit`), they are dropped and the call can no longer be retried.
Kept bytes count in the proxy's in-flight bytes budget, and may take at most half
of it (past that a call is no longer kept), so memory stays bounded and keeping
never refuses a message passing through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import grpc.aio
from grpc._cython import cygrpc  # type: ignore[attr-defined]  # InternalError: see _raw_sender

from balancer.limits import InFlightBytes

if TYPE_CHECKING:
    from balancer.engines.embedded.proxy import _Counts

Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Send = Callable[[bytes], Awaitable[None]]


class RequestFeed:
    """The client's request messages of one call, for one try at a time."""

    def __init__(
        self, context: Context, budget: InFlightBytes, buffer_bytes: int, *, retryable: bool
    ) -> None:
        """`retryable` False: one try only, so its pump reads the client itself (no task)."""
        self._context = context
        self._retryable = retryable
        self._budget = budget
        self._buffer_bytes = buffer_bytes
        self._log: list[bytes] = []
        self._log_bytes = 0
        # True while every message taken so far is in the log (a retry can replay them).
        self.held = True
        self._queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)
        self._reader: asyncio.Task[None] | None = None
        self._ended = False  # the client half-closed: EOF was taken

    def _start_reading(self) -> None:
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while (message := await self._context.read()) is not grpc.aio.EOF:
                await self._queue.put(message)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            pass  # the client's call ended: the handler ends with it
        await self._queue.put(grpc.aio.EOF)

    async def pump(self, call: grpc.aio.StreamStreamCall[Any, Any], counts: _Counts,
                   send: Send) -> None:  # fmt: skip
        """Client → endpoint for one try: the kept messages again, then every new one, then
        the half-close. Stops quietly once the endpoint has ended the call: its status, not
        a failed write, is what goes back to the client (or decides a retry).
        """
        if self._retryable:
            self._start_reading()
        try:
            await call.wait_for_connection()  # Core takes messages only after the headers
            for kept in list(self._log):
                await send(kept)
            while (message := await self._next()) is not grpc.aio.EOF:
                assert isinstance(message, bytes)
                if not await self._forward(call, message, counts, send):
                    return
            await call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass
        except cygrpc.InternalError:
            pass  # a write or the half-close after the endpoint's status: the status stands

    async def _next(self) -> object:
        """The client's next new message, or EOF (again, for every later try) once it ended."""
        if self._ended:
            return grpc.aio.EOF
        if not self._retryable:
            return await self._context.read()
        message = await self._queue.get()
        self._ended = message is grpc.aio.EOF
        return message

    async def _forward(
        self, call: grpc.aio.StreamStreamCall[Any, Any], message: bytes, counts: _Counts,
        send: Send,
    ) -> bool:  # fmt: skip
        """Sends one new message (kept first, so a retry replays it); False to stop."""
        size = len(message)
        counts.received += size
        if not self._budget.try_take(size):
            counts.refusal = self._budget.refusal(size)
            call.cancel()
            return False
        kept = self._keep(message)
        try:
            if call.done():
                return False
            await send(message)
        finally:
            if not kept:
                self._budget.give_back(size)
        return True

    def _keep(self, message: bytes) -> bool:
        """Keeps `message` for a replay when it fits the per-call buffer; else stops keeping."""
        if not self.held:
            return False
        over_buffer = self._log_bytes + len(message) > self._buffer_bytes
        # Kept messages may fill half the in-flight budget, never starve messages passing.
        over_budget = self._budget.in_flight_bytes > self._budget.limit_bytes // 2
        if over_buffer or over_budget:
            self.commit()
            return False
        self._log.append(message)
        self._log_bytes += len(message)
        return True

    def commit(self) -> None:
        """No retry from now on: drops the kept messages and gives their bytes back."""
        self.held = False
        self._budget.give_back(self._log_bytes)
        self._log.clear()
        self._log_bytes = 0

    def close(self) -> None:
        """The call is over: stops reading and lets go of what is kept."""
        if self._reader is not None:
            self._reader.cancel()
        self.commit()
