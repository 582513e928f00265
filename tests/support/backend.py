"""A real gRPC backend for tests: all four RPC kinds, raw bytes, knobs in metadata.

Every response carries the header `x-backend: <name>` so a test can tell which
endpoint served it. Request metadata steers behaviour:

- `x-fail-code` / `x-fail-details`: end the call with that status (trailer `x-why`);
- `x-delay-ms`: wait before answering (unary) or between messages (streams);
- `x-count`: number of messages the server stream sends (default 3);
- `x-echo-*`: copied back as response headers.

`Backend.fail_with` makes every call fail, as a broken pod does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

SERVICE = "test.Echo"
UNARY = f"/{SERVICE}/Unary"
SERVER_STREAM = f"/{SERVICE}/ServerStream"
CLIENT_STREAM = f"/{SERVICE}/ClientStream"
BIDI = f"/{SERVICE}/Bidi"
METHODS = (UNARY, SERVER_STREAM, CLIENT_STREAM, BIDI)

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass
class Backend:
    """A running backend; `cancelled` counts calls it saw cancelled by the client."""

    name: str
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    calls: int = 0
    cancelled: int = 0
    in_flight: int = 0
    # When set, every call ends with this status (a pod failing fast).
    fail_with: grpc.StatusCode | None = None
    metadata_seen: list[dict[str, Any]] = field(default_factory=list)
    deadlines_seen: list[float | None] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else (
            health_pb2.HealthCheckResponse.NOT_SERVING)  # fmt: skip
        await self.health.set("", status)

    async def stop(self) -> None:
        await self.server.stop(0)


def _md(context: Context) -> dict[str, Any]:
    return {m.key: m.value for m in context.invocation_metadata() or ()}


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, backend_ref: list[Backend]) -> None:
        self._ref = backend_ref

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method == UNARY:
            return grpc.unary_unary_rpc_method_handler(self.unary)
        if method == SERVER_STREAM:
            return grpc.unary_stream_rpc_method_handler(self.server_stream)
        if method == CLIENT_STREAM:
            return grpc.stream_unary_rpc_method_handler(self.client_stream)
        if method == BIDI:
            return grpc.stream_stream_rpc_method_handler(self.bidi)
        return None

    @property
    def b(self) -> Backend:
        return self._ref[0]

    async def _start(self, context: Context) -> dict[str, Any]:
        md = _md(context)
        self.b.calls += 1
        self.b.metadata_seen.append(md)
        self.b.deadlines_seen.append(context.time_remaining())
        headers = [("x-backend", self.b.name)]
        headers += [(k, v) for k, v in md.items() if k.startswith("x-echo-")]
        await context.send_initial_metadata(headers)
        return md

    async def _maybe_fail(self, context: Context, md: dict[str, Any]) -> None:
        if self.b.fail_with is not None:
            await context.abort(self.b.fail_with, f"{self.b.name} is failing")
        if "x-fail-code" in md:
            code = grpc.StatusCode[md["x-fail-code"]]
            context.set_trailing_metadata([("x-why", "asked-to-fail")])
            await context.abort(code, md.get("x-fail-details", ""))

    async def _tracked(self, context: Context, work: Any) -> Any:
        self.b.in_flight += 1
        try:
            return await work
        except asyncio.CancelledError:
            self.b.cancelled += 1
            raise
        finally:
            self.b.in_flight -= 1

    async def unary(self, request: bytes, context: Context) -> bytes:
        async def work() -> bytes:
            md = await self._start(context)
            await asyncio.sleep(float(md.get("x-delay-ms", 0)) / 1000)
            await self._maybe_fail(context, md)
            context.set_trailing_metadata([("x-trailer", self.b.name)])
            return request

        return await self._tracked(context, work())

    async def server_stream(self, request: bytes, context: Context) -> None:
        async def work() -> None:
            md = await self._start(context)
            for i in range(int(md.get("x-count", 3))):
                await asyncio.sleep(float(md.get("x-delay-ms", 0)) / 1000)
                await context.write(request + str(i).encode())
            await self._maybe_fail(context, md)
            context.set_trailing_metadata([("x-trailer", self.b.name)])

        await self._tracked(context, work())

    async def client_stream(self, requests: AsyncIterator[bytes], context: Context) -> bytes:
        async def work() -> bytes:
            md = await self._start(context)
            parts = [r async for r in requests]
            await self._maybe_fail(context, md)
            context.set_trailing_metadata([("x-trailer", self.b.name)])
            return b"|".join(parts)

        return await self._tracked(context, work())

    async def bidi(self, requests: AsyncIterator[bytes], context: Context) -> None:
        async def work() -> None:
            md = await self._start(context)
            async for r in requests:
                await asyncio.sleep(float(md.get("x-delay-ms", 0)) / 1000)
                await context.write(r.upper())
            await self._maybe_fail(context, md)
            context.set_trailing_metadata([("x-trailer", self.b.name)])

        await self._tracked(context, work())


async def start_backend(
    name: str,
    *,
    with_reflection: bool = False,
    credentials: grpc.ServerCredentials | None = None,
) -> Backend:
    """Starts a backend on 127.0.0.1, port 0, with grpc.health.v1 SERVING (over TLS with
    `credentials`)."""
    ref: list[Backend] = []
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ]
    )
    server.add_generic_rpc_handlers([_Handler(ref)])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if with_reflection:
        _add_echo_descriptor_reflection(server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    backend = Backend(name=name, server=server, port=port, health=health_servicer)
    ref.append(backend)
    await backend.set_serving(True)
    return backend


def _add_echo_descriptor_reflection(server: grpc.aio.Server) -> None:
    """Serves reflection describing test.Echo, so the balancer can learn it is unary."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    proto = descriptor_pb2.FileDescriptorProto(name="test_echo.proto", package="test")
    proto.message_type.add(name="Blob").field.add(
        name="data", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )  # fmt: skip
    svc = proto.service.add(name="Echo")
    for name, client, server_ in (("Unary", False, False), ("ServerStream", False, True),
                                  ("ClientStream", True, False), ("Bidi", True, True)):  # fmt: skip
        svc.method.add(name=name, input_type=".test.Blob", output_type=".test.Blob",
                       client_streaming=client, server_streaming=server_)  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    reflection.enable_server_reflection((SERVICE, reflection.SERVICE_NAME), server, pool=pool)
