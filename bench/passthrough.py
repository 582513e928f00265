"""A bare grpc.aio pass-through: the physical floor of any Python gRPC proxy, for benchmarks.

Every call, whatever its method, is forwarded as raw bytes (no (de)serializers, no metadata,
no stats, no policy) on one channel to one backend: ``/bench.Echo/Unary`` as a unary call,
everything else as a bidirectional stream. Once serving it prints ``{"port": 12345}`` on
stdout and runs until SIGTERM or SIGINT.

Run: ``python bench/passthrough.py --backend 127.0.0.1:50051``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any

import grpc
from echo_backend import STOP_GRACE_S, UNARY_METHOD, stop_event


class Forward(grpc.GenericRpcHandler):
    """Answers every method by forwarding it on ``channel``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method  # type: ignore[attr-defined]
        if method == UNARY_METHOD:
            return grpc.unary_unary_rpc_method_handler(self._unary(method))
        return grpc.stream_stream_rpc_method_handler(self._stream(method))

    def _unary(self, method: str) -> Callable[..., Any]:
        upstream = self._channel.unary_unary(method)

        async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            response: bytes = await upstream(request)
            return response

        return unary

    def _stream(self, method: str) -> Callable[..., Any]:
        upstream = self._channel.stream_stream(method)

        async def stream(requests: Any, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
            call = upstream()

            async def pump_requests() -> None:
                while isinstance(message := await context.read(), bytes):
                    await call.write(message)
                await call.done_writing()

            pumping = asyncio.create_task(pump_requests())
            while isinstance(reply := await call.read(), bytes):
                await context.write(reply)
            await pumping

        return stream


async def serve(backend: str) -> None:
    stopping = stop_event()
    async with grpc.aio.insecure_channel(backend) as channel:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((Forward(channel),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(json.dumps({"port": port}), flush=True)
        try:
            await stopping.wait()
        finally:
            await server.stop(STOP_GRACE_S)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", required=True, help="host:port of the one backend")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(parser.parse_args(argv).backend))


if __name__ == "__main__":
    main(sys.argv[1:])
