"""The two services the workload serves: `Inventory` (the misbehaving one) and `Knobs`.

Where the knobs apply on a stream: latency, CPU and the leak are paid per *response message*
(once for unary and client-streaming calls, once per item for server-streaming and
bidirectional ones), because the cost of a stream in a real service grows with its messages,
and a long-lived stream pinned to one pod must load that pod as its messages flow. A knob
changed at run time therefore reaches streams already open. The error rate is per *call*
(the share of calls that fail, as `grpc_server_handled_total` counts them): the fate is drawn
when the call starts; a failing call pays for its first response message, then ends with the
error instead of sending it (or at its end when it would send none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from demo.v1 import workload_pb2 as pb
from demo.v1 import workload_pb2_grpc as pb_grpc
from demo.workload.behaviour import Failure, Misbehaviour, Sleep
from demo.workload.knobs import KnobError, changes_from_proto

log = logging.getLogger("demo.workload")

Context = grpc.aio.ServicerContext[Any, Any]


async def _fail_if(failure: Failure | None, context: Context) -> None:
    if failure is not None:
        await context.abort(failure.code, failure.details)


class InventoryService(pb_grpc.InventoryServicer):
    """Answers with made-up items stamped with the pod name, misbehaving as the knobs say."""

    def __init__(self, pod: str, misbehaviour: Misbehaviour, sleep: Sleep = asyncio.sleep) -> None:
        self._pod = pod
        self._mis = misbehaviour
        self._sleep = sleep

    async def GetItem(self, request: pb.GetItemRequest, context: Context) -> pb.Item:
        failure = self._mis.draw_failure()
        await self._mis.work()
        await _fail_if(failure, context)
        return pb.Item(id=request.id, pod=self._pod, payload=bytes(request.payload_bytes))

    async def WatchItems(
        self, request: pb.WatchItemsRequest, context: Context
    ) -> AsyncIterator[pb.Item]:
        failure = self._mis.draw_failure()
        for i in range(request.count):
            if i and request.interval_ms:
                await self._sleep(request.interval_ms / 1000)
            await self._mis.work()
            await _fail_if(failure, context)
            yield pb.Item(id=f"{request.prefix}{i}", pod=self._pod)
        await _fail_if(failure, context)

    async def ImportItems(
        self, request_iterator: AsyncIterator[pb.Item], context: Context
    ) -> pb.ImportSummary:
        failure = self._mis.draw_failure()
        received = 0
        async for _ in request_iterator:
            received += 1
        await self._mis.work()
        await _fail_if(failure, context)
        return pb.ImportSummary(received=received, pod=self._pod)

    async def SyncItems(
        self, request_iterator: AsyncIterator[pb.Item], context: Context
    ) -> AsyncIterator[pb.Item]:
        failure = self._mis.draw_failure()
        async for item in request_iterator:
            await self._mis.work()
            await _fail_if(failure, context)
            yield pb.Item(id=item.id, pod=self._pod, payload=item.payload)
        await _fail_if(failure, context)


class KnobsService(pb_grpc.KnobsServicer):
    """Reads and changes the pod's knobs at run time; bad values end with INVALID_ARGUMENT."""

    def __init__(self, pod: str, misbehaviour: Misbehaviour) -> None:
        self._pod = pod
        self._mis = misbehaviour

    async def Get(self, request: pb.GetKnobsRequest, context: Context) -> pb.KnobSettings:
        return self._mis.knobs.to_proto()

    async def Set(self, request: pb.KnobSettings, context: Context) -> pb.KnobSettings:
        changes = changes_from_proto(request)
        try:
            self._mis.knobs = self._mis.knobs.changed(**changes)
        except KnobError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if changes:
            log.info("%s: knobs set: %s", self._pod, _describe(changes))
        return self._mis.knobs.to_proto()


def _describe(changes: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in changes.items())
