"""Helpers for the stream-flood fault test: a balancer process, a flooding client process.

`python -m tests.support.stream_flood ADDRESS STREAMS` is the flooding client: it
opens STREAMS server-streaming calls at once on one connection (each held at the
backend for a while), waits for every one to end (each has a deadline, so it stops
by itself) and prints the status codes it got as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import grpc.aio
import psutil

from tests.support import backend as be

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
FLOOD_HOLD_MS = 500
FLOOD_DEADLINE_S = 20.0


def balancer_toml(endpoints: Sequence[str], balancer: str = "") -> str:
    listing = ", ".join(f'"{e}"' for e in endpoints)
    return (
        f"[balancer]\nshutdown_grace_s = 1\n{balancer}\n"
        '[[listeners]]\naddress = "127.0.0.1:0"\n\n'
        f'[[clusters]]\nname = "echo"\nunary_methods = ["{be.UNARY}"]\n'
        f"discovery.endpoints = [{listing}]\n"
    )


@contextlib.asynccontextmanager
async def balancer_process(tmp_path: Path, toml: str) -> AsyncIterator[tuple[str, int]]:
    """Runs `python -m balancer` on `toml`; yields (listener address, pid); SIGTERM at exit."""
    config, ready = tmp_path / "ballast.toml", tmp_path / "ready.json"
    config.write_text(toml, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "BALLAST_ADMIN_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "balancer", "--config", str(config), "--ready-file", str(ready),
        "--log-level", "WARNING", cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while not ready.exists():
            assert proc.returncode is None, "the balancer exited before it was ready"
            assert loop.time() < deadline, "the balancer did not get ready in time"
            await asyncio.sleep(0.05)
        (listener,) = json.loads(ready.read_text(encoding="utf-8"))["listeners"]
        yield listener, proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def run_flood(address: str, streams: int) -> Counter[str]:
    """Starts the flooding client process and returns the codes its streams ended with."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.stream_flood", address, str(streams),
        cwd=ROOT, stdout=subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await asyncio.wait_for(proc.communicate(), FLOOD_DEADLINE_S * 6)
    assert proc.returncode == 0
    return Counter(json.loads(stdout))


class RssSampler:
    """Samples a process's resident memory every few ms; `peak_bytes` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self.peak_bytes = self._process.memory_info().rss
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _sample(self) -> None:
        while True:
            rss = await asyncio.to_thread(lambda: self._process.memory_info().rss)
            self.peak_bytes = max(self.peak_bytes, rss)
            await asyncio.sleep(0.01)


async def _flood(address: str, streams: int) -> Counter[str]:
    codes: Counter[str] = Counter()
    metadata = [("x-delay-ms", str(FLOOD_HOLD_MS)), ("x-count", "1")]
    async with grpc.aio.insecure_channel(address) as channel:
        stream = channel.unary_stream(be.SERVER_STREAM)

        async def one() -> None:
            try:
                async for _ in stream(b"f", metadata=metadata, timeout=FLOOD_DEADLINE_S):
                    pass
                codes["OK"] += 1
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1

        await asyncio.gather(*(one() for _ in range(streams)))
    return codes


if __name__ == "__main__":
    counts = asyncio.run(_flood(sys.argv[1], int(sys.argv[2])))
    print(json.dumps(counts))
