"""`python -m balancer.demo`: a balancer in front of local echo backends, with light load.

Everything binds to 127.0.0.1. It prints how to reach the proxy, the admin API
(with a token generated for this run) and the Prometheus metrics, then a
per-endpoint table every few seconds until Ctrl-C. The local platform's scene
(issue "Local platform, demo workload") replaces it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from balancer.config import BalancerConfig, config_from_dict
from balancer.server import Balancer
from balancer.stats import quantile_ms

ECHO_METHOD = "/demo.Echo/Say"


class _Echo(grpc.GenericRpcHandler):
    """Echoes raw bytes: unary `Say`, and any other method as a bidi stream."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        if details.method == ECHO_METHOD:
            return grpc.unary_unary_rpc_method_handler(self._say)
        return grpc.stream_stream_rpc_method_handler(self._stream)

    async def _say(self, request: bytes, context: Any) -> bytes:
        return request

    async def _stream(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for request in requests:
            yield request


async def start_echo() -> tuple[grpc.aio.Server, int]:
    """An echo backend on 127.0.0.1 (port 0) serving grpc.health.v1."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([_Echo()])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, port


def demo_config(ports: list[int], token: str, listen_port: int, admin_port: int) -> BalancerConfig:
    return config_from_dict(
        {
            "balancer": {"id": "demo"},
            "listeners": [{"address": f"127.0.0.1:{listen_port}"}],
            "admin": {
                "address": f"127.0.0.1:{admin_port}",
                "token": token,
                "metrics_address": "127.0.0.1:0",
            },
            "clusters": [
                {
                    "name": "echo",
                    "policy": "least_request",
                    "unary_methods": [ECHO_METHOD],
                    "health_check": {"enabled": True, "interval_s": 2.0},
                    "discovery": {
                        "endpoints": [
                            {"address": f"127.0.0.1:{p}", "name": f"echo-{i}"}
                            for i, p in enumerate(ports)
                        ]
                    },
                }
            ],
        },
        environ={},
    )


async def _load(target: str, rps: float, stop: asyncio.Event) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        say: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(ECHO_METHOD)
        while not stop.is_set():
            with contextlib.suppress(grpc.aio.AioRpcError):
                await say(b"hello", timeout=2)
            await asyncio.sleep(1 / rps)


def _table(balancer: Balancer) -> str:
    rows = [f"{'endpoint':<10} {'state':<10} {'weight':>6} {'requests':>9} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'in-flight':>9}"]  # fmt: skip
    for ep in balancer.clusters["echo"].endpoints.values():
        counts = ep.stats.latency_counts
        p50, p99 = quantile_ms(counts, 0.5) or 0.0, quantile_ms(counts, 0.99) or 0.0
        rows.append(
            f"{ep.id:<10} {ep.state.value:<10} {ep.weight:>6} {ep.stats.total_requests:>9} "
            f"{p50:>7.2f} {p99:>7.2f} {ep.in_flight:>9}"
        )
    return "\n".join(rows)


async def run(args: argparse.Namespace) -> None:
    backends = [await start_echo() for _ in range(args.backends)]
    try:
        await _serve(args, [port for _, port in backends])
    finally:
        for server, _ in backends:
            await server.stop(0)


async def _serve(args: argparse.Namespace, ports: list[int]) -> None:
    token = secrets.token_urlsafe(24)
    balancer = Balancer(demo_config(ports, token, args.port, args.admin_port))
    await balancer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(_banner(balancer, token), flush=True)
    load = loop.create_task(_load(balancer.listen_addresses[0], args.rps, stop))
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.every_s)
            print(_table(balancer), end="\n\n", flush=True)
    finally:
        stop.set()
        await load
        await balancer.stop(grace_s=1)


def _banner(balancer: Balancer, token: str) -> str:
    target = balancer.listen_addresses[0]
    return f"""
Ballast demo — {len(balancer.clusters["echo"].endpoints)} echo backends behind one balancer.

  gRPC proxy:   {balancer.listen_addresses[0]}   (method {ECHO_METHOD}, any bytes)
  admin API:    {balancer.admin_address}   (header: authorization: Bearer {token})
  metrics:      http://{balancer.metrics_address}/metrics

Call it:
  .venv/bin/python -c "import grpc; print(grpc.insecure_channel('{target}')\\
.unary_unary('{ECHO_METHOD}')(b'hi'))"

A per-endpoint table follows every few seconds; Ctrl-C stops everything.
"""


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m balancer.demo", description=__doc__)
    parser.add_argument("--backends", type=int, default=3, help="echo backends (default 3)")
    parser.add_argument("--port", type=int, default=50051, help="proxy port (default 50051)")
    parser.add_argument("--admin-port", type=int, default=9901, help="admin port (default 9901)")
    parser.add_argument("--rps", type=float, default=50, help="demo load, calls/s (default 50)")
    parser.add_argument("--every-s", type=float, default=3, help="table refresh (default 3 s)")
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(run(parser.parse_args()))
    except OSError as err:
        raise SystemExit(f"ballast demo: {err}") from None


if __name__ == "__main__":
    main()
