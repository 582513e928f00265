"""Learn which methods are unary from an upstream's server reflection, where it has it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

_SKIP = ("grpc.reflection.", "grpc.health.", "grpc.channelz.")


async def unary_methods(channel: grpc.aio.Channel, timeout_s: float) -> set[str]:
    """Paths (`/pkg.Service/Method`) of the upstream's unary methods.

    Raises grpc.aio.AioRpcError when the upstream has no reflection service
    (UNIMPLEMENTED) or cannot be reached.
    """
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    queue: asyncio.Queue[reflection_pb2.ServerReflectionRequest | None] = asyncio.Queue()
    call = stub.ServerReflectionInfo(_drain(queue), timeout=timeout_s)
    try:
        await queue.put(reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = await call.read()
        services = [
            s.name for s in listed.list_services_response.service if not s.name.startswith(_SKIP)
        ]
        methods: set[str] = set()
        for service in services:
            await queue.put(reflection_pb2.ServerReflectionRequest(file_containing_symbol=service))
            response = await call.read()
            files = response.file_descriptor_response.file_descriptor_proto
            methods |= _unary_in(service, files)
        return methods
    finally:
        await queue.put(None)
        call.cancel()


async def _drain(
    queue: asyncio.Queue[reflection_pb2.ServerReflectionRequest | None],
) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    while (request := await queue.get()) is not None:
        yield request


def _unary_in(service: str, files: list[bytes]) -> set[str]:
    package, _, name = service.rpartition(".")
    for raw in files:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        if proto.package != package:
            continue
        for svc in proto.service:
            if svc.name == name:
                return {
                    f"/{service}/{m.name}"
                    for m in svc.method
                    if not m.client_streaming and not m.server_streaming
                }
    return set()
