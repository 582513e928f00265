"""A call kept in flight: what makes draining a pod take a while (restart tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import grpc.aio

from demo.v1 import workload_pb2 as pb
from demo.v1 import workload_pb2_grpc as pb_grpc


@dataclass
class HeldStream:
    """A SyncItems call through `target`, open: `pod` serves it; `code` is how it ended
    (None while it runs, or when the test ended it itself)."""

    pod: str
    call: grpc.aio.StreamStreamCall
    code: grpc.StatusCode | None = None

    async def ended(self) -> grpc.StatusCode:
        """Waits for the call's end (the balancer's drain timeout, a kill) and its code."""
        self.code = await self.call.code()
        return self.code


@contextlib.asynccontextmanager
async def held_stream(target: str) -> AsyncIterator[HeldStream]:
    """Opens a bidirectional SyncItems call through `target`, sends one item and keeps
    the call open (no half-close) until the block ends; yields it once a reply has
    named the pod that serves it."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = pb_grpc.InventoryStub(channel).SyncItems()
        await call.write(pb.Item(id="held"))
        reply = await call.read()
        assert isinstance(reply, pb.Item), reply
        held = HeldStream(reply.pod, call)
        try:
            yield held
        finally:
            call.cancel()
