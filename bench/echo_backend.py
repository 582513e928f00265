"""A bare gRPC echo server for benchmarks: raw bytes in, the same bytes out.

Methods (registered without serializers, so handlers see raw bytes):

- ``/bench.Echo/Unary`` returns the request bytes.
- ``/bench.Echo/Bidi`` echoes every message of a bidirectional stream.

It also serves ``grpc.health.v1.Health`` (SERVING for "" and "bench.Echo") so a
balancer can health check it. Once serving it prints one JSON line to stdout,
``{"port": 12345}``, and then runs until SIGTERM or SIGINT.

Run: ``python bench/echo_backend.py [--port 0]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SERVICE_NAME = "bench.Echo"
UNARY_METHOD = f"/{SERVICE_NAME}/Unary"
BIDI_METHOD = f"/{SERVICE_NAME}/Bidi"
STOP_GRACE_S = 0.5


async def echo_unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def echo_bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> None:
    # read()/write() on the context avoid the async-generator wrapping per message.
    while True:
        message = await context.read()
        if not isinstance(message, bytes):  # grpc.aio.EOF: the client is done writing
            return
        await context.write(message)


def echo_handler() -> grpc.GenericRpcHandler:
    """A generic handler with no (de)serializers: the handlers get and return bytes."""
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(echo_unary),
            "Bidi": grpc.stream_stream_rpc_method_handler(echo_bidi),
        },
    )


async def health_servicer() -> health.aio.HealthServicer:
    servicer = health.aio.HealthServicer()
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", SERVICE_NAME):
        await servicer.set(service, serving)
    return servicer


async def start_server(port: int) -> tuple[grpc.aio.Server, int]:
    """Starts the server on 127.0.0.1:port (0 picks a free port); returns it and its port."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((echo_handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(await health_servicer(), server)
    bound_port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound_port


def stop_event() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, event.set)
    return event


async def serve(port: int) -> None:
    stopping = stop_event()
    server, bound_port = await start_server(port)
    print(json.dumps({"port": bound_port}), flush=True)
    try:
        await stopping.wait()
    finally:
        await server.stop(STOP_GRACE_S)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main(sys.argv[1:])
