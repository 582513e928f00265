"""A bare gRPC echo server for benchmarks: raw bytes in, the same bytes out.

Methods (registered without serializers, so handlers see raw bytes):

- ``/bench.Echo/Unary`` returns the request bytes.
- ``/bench.Echo/Bidi`` echoes every message of a bidirectional stream.

It also serves ``grpc.health.v1.Health`` (SERVING for "" and "bench.Echo") so a
balancer can health check it. Once serving it prints one JSON line to stdout,
``{"port": 12345, "ports": [12345]}``, and then runs until SIGTERM or SIGINT.
``--ports N`` serves the same server on N free ports, as N backends in one process.

Run: ``python bench/echo_backend.py [--port 0] [--ports 1]``.
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


async def start_server(port: int, count: int = 1) -> tuple[grpc.aio.Server, list[int]]:
    """Starts the server on ``count`` ports of 127.0.0.1 (``port``, or free ports when it is
    0); returns it and its ports."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((echo_handler(),))
    health_pb2_grpc.add_HealthServicer_to_server(await health_servicer(), server)
    bound_ports = [server.add_insecure_port(f"127.0.0.1:{port}") for _ in range(count)]
    await server.start()
    return server, bound_ports


def stop_event() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, event.set)
    return event


async def serve(port: int, count: int) -> None:
    stopping = stop_event()
    server, bound_ports = await start_server(port, count)
    print(json.dumps({"port": bound_ports[0], "ports": bound_ports}), flush=True)
    try:
        await stopping.wait()
    finally:
        await server.stop(STOP_GRACE_S)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick)")
    parser.add_argument("--ports", type=int, default=1, help="how many ports (with --port 0)")
    args = parser.parse_args(argv)
    if args.ports < 1 or (args.ports > 1 and args.port != 0):
        parser.error("--ports must be >= 1, and more than 1 needs --port 0")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.ports))


if __name__ == "__main__":
    main(sys.argv[1:])
