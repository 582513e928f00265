"""Convergence probes for `proxyless.py`: a named backend, and a proxyless client that
remembers when it last (and first, since a mark) sent a call to each backend.

- `python bench/xds_probe.py backend NAME`: serves `/bench.Echo/Unary` on a free port of
  127.0.0.1, answering with the header `x-backend: NAME`; prints `{"port": P}`.
- `python bench/xds_probe.py client TARGET [--concurrency N]` (with GRPC_XDS_BOOTSTRAP):
  calls TARGET back to back from N workers and answers stdin lines: `mark` → `{}` (forget
  first-seen times), `report` → `{"last": {backend: unix_s}, "first": {backend: unix_s}}`,
  where `last` is the start of the latest call each backend served and `first` the start
  of the first one since the mark.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import grpc
import grpc.aio

UNARY_METHOD = "/bench.Echo/Unary"


async def serve_backend(name: str) -> None:
    async def unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.send_initial_metadata((("x-backend", name),))
        return request

    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}
    )
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(json.dumps({"port": port}), flush=True)
    await server.wait_for_termination()


class Probe:
    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.first: dict[str, float] = {}

    async def worker(self, channel: grpc.aio.Channel) -> None:
        unary = channel.unary_unary(UNARY_METHOD)
        while True:
            started = time.time()
            call = unary(b"p", timeout=5, wait_for_ready=True)
            try:
                await call
            except grpc.aio.AioRpcError:
                continue
            backend = str(dict(await call.initial_metadata() or ()).get("x-backend", ""))
            self.last[backend] = max(started, self.last.get(backend, 0.0))
            self.first.setdefault(backend, started)

    def answer(self, command: str) -> dict[str, Any]:
        if command == "mark":
            self.first = {}
            return {}
        return {"last": dict(self.last), "first": dict(self.first)}


async def run_client(target: str, concurrency: int) -> None:
    probe = Probe()
    async with grpc.aio.insecure_channel(target) as channel:
        workers = [asyncio.create_task(probe.worker(channel)) for _ in range(concurrency)]
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            print(json.dumps(probe.answer(line.strip())), flush=True)
        for worker in workers:
            worker.cancel()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("backend").add_argument("name")
    client = sub.add_parser("client")
    client.add_argument("target")
    client.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args(argv)
    if args.mode == "backend":
        asyncio.run(serve_backend(args.name))
    else:
        asyncio.run(run_client(args.target, args.concurrency))


if __name__ == "__main__":
    main(sys.argv[1:])
