"""A proxyless gRPC client in its own process: `python -m tests.support.xds_client TARGET`.

grpcio reads GRPC_XDS_BOOTSTRAP when the process starts, so each client is a
subprocess. It takes one JSON command per stdin line and answers each with one
JSON line on stdout:

- `{"op": "calls", "n": N, "metadata": {...}, "wait_for_ready": true}` →
  `{"counts": {backend: calls}, "errors": {code: calls}, "failed_on": {backend: calls}}`:
  N unary calls one after another, counted by the `x-backend` header;
- `{"op": "open_streams", "n": K, "messages": M, "delay_ms": D}` → `{"opened": K}`:
  K server streams left running (M messages, D ms apart);
- `{"op": "finish_streams"}` → `{"codes": {code: n}, "messages": [...], "counts": {...}}`:
  waits for the open streams to end.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any

import grpc
import grpc.aio

from tests.support import backend as be


class Client:
    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.streams: list[asyncio.Task[tuple[str, int, str]]] = []

    async def calls(
        self, n: int, metadata: dict[str, str] | None = None, wait_for_ready: bool = True
    ) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        failed_on: Counter[str] = Counter()  # calls that failed, by the backend that failed them
        unary = self.channel.unary_unary(be.UNARY)
        md = tuple((metadata or {}).items())
        for _ in range(n):
            call = unary(b"x", metadata=md, timeout=10, wait_for_ready=wait_for_ready)
            try:
                await call
                counts[dict(await call.initial_metadata())["x-backend"]] += 1
            except grpc.aio.AioRpcError as err:
                errors[err.code().name] += 1
                failed_on[str(dict(await call.initial_metadata() or ()).get("x-backend"))] += 1
        return {"counts": dict(counts), "errors": dict(errors), "failed_on": dict(failed_on)}

    async def _stream(self, messages: int, delay_ms: int) -> tuple[str, int, str]:
        md = (("x-count", str(messages)), ("x-delay-ms", str(delay_ms)))
        call = self.channel.unary_stream(be.SERVER_STREAM)(
            b"s", metadata=md, timeout=60, wait_for_ready=True
        )
        received = 0
        try:
            async for _ in call:
                received += 1
        except grpc.aio.AioRpcError:
            pass
        backend = dict(await call.initial_metadata() or ()).get("x-backend", "")
        return (await call.code()).name, received, str(backend)

    async def open_streams(self, n: int, messages: int, delay_ms: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.streams += [loop.create_task(self._stream(messages, delay_ms)) for _ in range(n)]
        return {"opened": n}

    async def finish_streams(self) -> dict[str, Any]:
        results = await asyncio.gather(*self.streams)
        self.streams = []
        return {
            "codes": dict(Counter(code for code, _, _ in results)),
            "messages": [received for _, received, _ in results],
            "counts": dict(Counter(backend for _, _, backend in results)),
        }


async def serve(target: str) -> None:
    client = Client(target)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = json.loads(line)
        op = command.pop("op")
        answer = await getattr(client, op)(**command)
        print(json.dumps(answer), flush=True)
    await client.channel.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
