"""Closed-loop gRPC load generator for the echo benchmark (grpc.aio, raw bytes).

Modes:

- ``unary``: ``concurrency`` workers, each issuing ``/bench.Echo/Unary`` calls back to back.
  Every call that completes inside the measurement window is counted and its latency
  recorded, so p50/p99 are exact over the window.
- ``stream``: ``concurrency`` bidi streams on ``/bench.Echo/Bidi``, each pipelined with
  ``stream_window`` messages in flight: a stream writes ``stream_window`` messages, then
  writes one more for every echo it reads. ``count`` is echoed messages read.

The ``channels`` channels are spread over the targets round robin (two targets and two
channels: one each; one target and two channels: two connections to it), and workers are
spread over the channels. Each channel uses its own subchannel pool, so every channel is
its own TCP connection.

Each run first warms up for ``warmup_s``, then measures for ``duration_s``. It prints JSON
lines to stdout: ``{"event": "measuring"}`` when the window opens, ``{"event": "stopped"}``
when it closes (before in-flight calls drain) and ``{"event": "result", ...}`` at the end,
so a parent can sample other processes' CPU time over exactly the window.

One-shot: ``python bench/loadgen.py --target 127.0.0.1:PORT --mode unary``.
As a worker: ``python bench/loadgen.py --serve`` reads one JSON run spec per stdin line
(fields of ``LoadSpec``), answers each with the events above and exits on EOF; its
channels stay open between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import grpc

UNARY_METHOD = "/bench.Echo/Unary"
BIDI_METHOD = "/bench.Echo/Bidi"
CHANNEL_READY_TIMEOUT_S = 10.0
CHANNEL_OPTIONS = [
    # Without this, channels to the same target share one connection.
    ("grpc.use_local_subchannel_pool", 1),
    # No retry policy is configured; skip the retry filter's buffering.
    ("grpc.enable_retries", 0),
]

Mode = Literal["unary", "stream"]
Emit = Callable[[dict[str, Any]], None]
UnaryCall = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
BidiCall = grpc.aio.StreamStreamMultiCallable[bytes, bytes]


@dataclass(frozen=True)
class LoadSpec:
    """One run: what to call, how hard and for how long."""

    targets: tuple[str, ...]
    mode: Mode = "unary"
    concurrency: int = 64
    duration_s: float = 5.0
    warmup_s: float = 1.0
    message_bytes: int = 128
    channels: int = 2
    stream_window: int = 16
    # A load balancing policy for every channel ("round_robin" spreads the calls of one
    # channel over a multi-address target such as "ipv4:a,b"); "": gRPC's default.
    lb_policy: str = ""

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("at least one target is required")
        if self.mode not in ("unary", "stream"):
            raise ValueError(f"mode must be 'unary' or 'stream', not {self.mode!r}")
        if min(self.concurrency, self.channels, self.stream_window) < 1:
            raise ValueError("concurrency, channels and stream_window must be >= 1")
        if self.duration_s <= 0 or self.warmup_s < 0 or self.message_bytes < 0:
            raise ValueError("duration_s must be > 0, warmup_s and message_bytes >= 0")

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> LoadSpec:
        return cls(**{**raw, "targets": tuple(raw["targets"])})


@dataclass
class Window:
    """The measurement window; completions count only while ``measuring``."""

    measuring: bool = False
    stopped: bool = False
    start_s: float = 0.0
    end_s: float = 0.0

    def open(self) -> None:
        self.start_s = time.perf_counter()
        self.measuring = True

    def close(self) -> None:
        self.end_s = time.perf_counter()
        self.measuring = False
        self.stopped = True


@dataclass
class Tally:
    count: int = 0
    errors: int = 0
    latencies_ns: list[int] = field(default_factory=list)


def percentile_ms(sorted_ns: Sequence[int], quantile: float) -> float | None:
    """Nearest-rank percentile in ms; None when there are no samples."""
    if not sorted_ns:
        return None
    rank = max(1, math.ceil(quantile * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1e6


async def unary_worker(call: UnaryCall, payload: bytes, window: Window, tally: Tally) -> None:
    while not window.stopped:
        started_ns = time.perf_counter_ns()
        try:
            await call(payload)
        except grpc.aio.AioRpcError:
            if window.measuring:
                tally.errors += 1
            continue
        if window.measuring:
            tally.count += 1
            tally.latencies_ns.append(time.perf_counter_ns() - started_ns)


async def stream_worker(
    call: BidiCall, payload: bytes, in_flight: int, window: Window, tally: Tally
) -> None:
    stream = call()
    try:
        for _ in range(in_flight):
            await stream.write(payload)
        while not window.stopped:
            if await stream.read() is grpc.aio.EOF:
                raise RuntimeError("server ended the stream early")
            if window.measuring:
                tally.count += 1
            await stream.write(payload)
        await stream.done_writing()
        while await stream.read() is not grpc.aio.EOF:
            pass
    except (grpc.aio.AioRpcError, RuntimeError):
        tally.errors += 1
        stream.cancel()


async def open_channels(spec: LoadSpec) -> list[grpc.aio.Channel]:
    """Opens ``spec.channels`` channels over the targets round robin, waiting until ready."""
    options = list(CHANNEL_OPTIONS)
    if spec.lb_policy:
        options.append(("grpc.lb_policy_name", spec.lb_policy))
    channels = [
        grpc.aio.insecure_channel(spec.targets[i % len(spec.targets)], options=options)
        for i in range(spec.channels)
    ]
    ready = (channel.channel_ready() for channel in channels)
    await asyncio.wait_for(asyncio.gather(*ready), CHANNEL_READY_TIMEOUT_S)
    return channels


def start_workers(
    spec: LoadSpec, channels: Sequence[grpc.aio.Channel], window: Window, tally: Tally
) -> list[asyncio.Task[None]]:
    payload = b"x" * spec.message_bytes
    tasks = []
    for i in range(spec.concurrency):
        channel = channels[i % len(channels)]
        if spec.mode == "unary":
            worker = unary_worker(channel.unary_unary(UNARY_METHOD), payload, window, tally)
        else:
            bidi: BidiCall = channel.stream_stream(BIDI_METHOD)
            worker = stream_worker(bidi, payload, spec.stream_window, window, tally)
        tasks.append(asyncio.create_task(worker))
    return tasks


async def time_window(spec: LoadSpec, window: Window, emit: Emit) -> None:
    await asyncio.sleep(spec.warmup_s)
    emit({"event": "measuring"})
    window.open()
    await asyncio.sleep(spec.duration_s)
    window.close()
    emit({"event": "stopped"})


def result(spec: LoadSpec, window: Window, tally: Tally) -> dict[str, Any]:
    elapsed_s = window.end_s - window.start_s
    latencies_ns = sorted(tally.latencies_ns)
    return {
        "event": "result",
        "mode": spec.mode,
        "targets": list(spec.targets),
        "concurrency": spec.concurrency,
        "count": tally.count,
        "errors": tally.errors,
        "elapsed_s": round(elapsed_s, 4),
        "rps": round(tally.count / elapsed_s, 1),
        "p50_ms": percentile_ms(latencies_ns, 0.50),
        "p99_ms": percentile_ms(latencies_ns, 0.99),
    }


async def run_load(
    spec: LoadSpec, channels: Sequence[grpc.aio.Channel], emit: Emit
) -> dict[str, Any]:
    """Runs one warm-up plus measurement window and returns the result event."""
    window, tally = Window(), Tally()
    workers = start_workers(spec, channels, window, tally)
    try:
        await time_window(spec, window, emit)
        await asyncio.gather(*workers)
    finally:
        for worker in workers:
            worker.cancel()
    return result(spec, window, tally)


def emit_json(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class ChannelPool:
    """Keeps channels open across runs, keyed by (targets, channel count, policy)."""

    def __init__(self) -> None:
        self._channels: dict[tuple[tuple[str, ...], int, str], list[grpc.aio.Channel]] = {}

    async def get(self, spec: LoadSpec) -> list[grpc.aio.Channel]:
        key = (spec.targets, spec.channels, spec.lb_policy)
        if key not in self._channels:
            self._channels[key] = await open_channels(spec)
        return self._channels[key]

    async def close(self) -> None:
        for channels in self._channels.values():
            for channel in channels:
                await channel.close()


async def serve_stdin() -> None:
    """Runs one spec per stdin line until EOF."""
    pool = ChannelPool()
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            spec = LoadSpec.from_json(json.loads(line))
            emit_json(await run_load(spec, await pool.get(spec), emit_json))
    finally:
        await pool.close()


async def run_once(spec: LoadSpec) -> None:
    pool = ChannelPool()
    try:
        emit_json(await run_load(spec, await pool.get(spec), emit_json))
    finally:
        await pool.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help="read run specs from stdin")
    parser.add_argument("--target", action="append", default=[], help="host:port, repeatable")
    parser.add_argument("--mode", choices=["unary", "stream"], default="unary")
    parser.add_argument("--lb-policy", default="", help="e.g. round_robin; default: gRPC's")
    defaults = LoadSpec(targets=("unused",))
    for name in ("concurrency", "message_bytes", "channels", "stream_window"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name)
        )
    for name in ("duration_s", "warmup_s"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name)
        )
    return parser.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    fields = asdict(LoadSpec(targets=("unused",)))
    values = {name: getattr(args, name) for name in fields if name != "targets"}
    return LoadSpec(targets=tuple(args.target), **values)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_stdin() if args.serve else run_once(spec_from_args(args)))


if __name__ == "__main__":
    main(sys.argv[1:])
