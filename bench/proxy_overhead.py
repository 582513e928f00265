"""Ballast proxy overhead: direct vs proxied gRPC throughput, latency and CPU, as JSON.

Starts two echo backends, three balancers in front of them (the embedded engine with stats
recording on and off, the HAProxy engine), a bare grpc.aio pass-through to the first backend
(the floor of any Python proxy) and load generator processes, then runs the cases in
alternating rounds (direct, embedded, embedded with stats off, pass-through, HAProxy; the
same at concurrency 1 for latency, and bidi streaming) and prints one JSON object, the
medians over rounds, as the last line of stdout. Progress goes to stderr. See
bench/README.md for what each key means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
from balancer_process import launch_balancer, wait_until_ready
from cases import Sample, Settings, Topology, case_groups, round_order, run_case
from processes import BenchError, Child, read_json_line, start_child, stop_child
from summary import summarize

BENCH_DIR = Path(__file__).resolve().parent
BACKEND_COUNT = 2
STARTUP_TIMEOUT_S = 15.0
# 13 cases per round: --quick stays under 60 s on a 2-core machine.
QUICK = {"rounds": 3, "duration_s": 0.8, "warmup_s": 0.25}
FULL = {"rounds": 5, "duration_s": 4.0, "warmup_s": 1.0}


async def start_backend(stack: contextlib.AsyncExitStack, name: str) -> tuple[Child, str]:
    """Starts an echo backend (stopped by ``stack``); returns it and its address."""
    child = await start_child(name, [sys.executable, str(BENCH_DIR / "echo_backend.py")])
    stack.push_async_callback(stop_child, child)
    ready = await read_json_line(child, STARTUP_TIMEOUT_S)
    return child, f"127.0.0.1:{ready['port']}"


async def start_loadgen(stack: contextlib.AsyncExitStack, name: str) -> Child:
    argv = [sys.executable, str(BENCH_DIR / "loadgen.py"), "--serve"]
    child = await start_child(name, argv, stdin=asyncio.subprocess.PIPE)
    stack.push_async_callback(stop_child, child)
    return child


async def start_balancer(
    stack: contextlib.AsyncExitStack,
    name: str,
    work_dir: Path,
    backends: list[str],
    stats: bool,
    engine: str = "embedded",
) -> tuple[Child, str]:
    """Starts a balancer (stopped by ``stack``) and waits for its ready file."""
    child, ready_path = await launch_balancer(
        name, work_dir, backends, record_stats=stats, engine=engine
    )
    stack.push_async_callback(stop_child, child)
    return child, await wait_until_ready(child, ready_path)


async def start_passthrough(stack: contextlib.AsyncExitStack, backend: str) -> tuple[Child, str]:
    """Starts bench/passthrough.py in front of ``backend``; returns it and its address."""
    argv = [sys.executable, str(BENCH_DIR / "passthrough.py"), "--backend", backend]
    child = await start_child("passthrough", argv)
    stack.push_async_callback(stop_child, child)
    ready = await read_json_line(child, STARTUP_TIMEOUT_S)
    return child, f"127.0.0.1:{ready['port']}"


def with_children(pid: int) -> tuple[int, ...]:
    """``pid`` and its descendants now (the HAProxy engine's balancer and its haproxy)."""
    children = psutil.Process(pid).children(recursive=True)
    if not children:
        raise BenchError(f"the HAProxy engine's balancer (pid {pid}) has no haproxy child")
    return (pid, *(child.pid for child in children))


def first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


@contextlib.contextmanager
def unwrap_bench_errors() -> Iterator[None]:
    """Re-raises a BenchError from a TaskGroup on its own, so main() can report it."""
    try:
        yield
    except ExceptionGroup as group:
        matched = group.subgroup(BenchError)
        if matched is None:
            raise
        raise first_leaf(matched) from None


async def start_all(
    stack: contextlib.AsyncExitStack, work_dir: Path, settings: Settings
) -> tuple[Topology, list[Child], list[Child]]:
    """Starts every process; returns the topology, the load generators and the balancers."""
    with unwrap_bench_errors():
        return await start_processes(stack, work_dir, settings)


async def start_processes(
    stack: contextlib.AsyncExitStack, work_dir: Path, settings: Settings
) -> tuple[Topology, list[Child], list[Child]]:
    async with asyncio.TaskGroup() as group:
        backend_tasks = [
            group.create_task(start_backend(stack, f"echo-backend-{i}"))
            for i in range(BACKEND_COUNT)
        ]
        loadgen_tasks = [
            group.create_task(start_loadgen(stack, f"loadgen-{i}"))
            for i in range(settings.loadgen_procs)
        ]
    backends = [task.result() for task in backend_tasks]
    addresses = [address for _, address in backends]
    async with asyncio.TaskGroup() as group:
        stats_on = group.create_task(start_balancer(stack, "balancer", work_dir, addresses, True))
        stats_off = group.create_task(
            start_balancer(stack, "balancer-stats-off", work_dir, addresses, False)
        )
        haproxy_task = group.create_task(
            start_balancer(stack, "balancer-haproxy", work_dir, addresses, True, "haproxy")
        )
        passthrough_task = group.create_task(start_passthrough(stack, addresses[0]))
    loadgens = [task.result() for task in loadgen_tasks]
    (proxy, proxy_address), (off, off_address) = stats_on.result(), stats_off.result()
    (haproxy, haproxy_address), (passthrough, passthrough_address) = (
        haproxy_task.result(),
        passthrough_task.result(),
    )
    topology = Topology(
        backend_addresses=tuple(addresses),
        backend_pids=tuple(child.pid for child, _ in backends),
        proxy_address=proxy_address,
        proxy_pid=proxy.pid,
        stats_off_address=off_address,
        stats_off_pid=off.pid,
        loadgen_pids=tuple(child.pid for child in loadgens),
        passthrough_address=passthrough_address,
        passthrough_pid=passthrough.pid,
        haproxy_address=haproxy_address,
        haproxy_pids=with_children(haproxy.pid),
    )
    return topology, loadgens, [proxy, off, haproxy, passthrough]


def check_alive(children: list[Child]) -> None:
    for child in children:
        if not child.alive:
            raise BenchError(
                f"{child.name} exited with code {child.process.returncode} during the run:\n"
                f"{child.log_tail()}"
            )


def log_sample(sample: Sample, rounds: int) -> None:
    latency = f", p50 {sample.p50_ms:.3f} ms" if sample.case.startswith("latency") else ""
    print(
        f"round {sample.round_index + 1}/{rounds} {sample.case}: {sample.rps:.0f}/s{latency}",
        file=sys.stderr,
        flush=True,
    )


async def run_rounds(
    topology: Topology, settings: Settings, loadgens: list[Child], balancers: list[Child]
) -> list[Sample]:
    groups = case_groups(topology, settings)
    samples = []
    for round_index in range(settings.rounds):
        for case in round_order(groups, round_index):
            sample = await run_case(case, round_index, settings, loadgens)
            check_alive(balancers)
            log_sample(sample, settings.rounds)
            samples.append(sample)
    return samples


def context(settings: Settings, elapsed_s: float) -> dict[str, Any]:
    return {
        "rounds": settings.rounds,
        "duration_s": settings.duration_s,
        "warmup_s": settings.warmup_s,
        "concurrency": settings.concurrency,
        "stream_concurrency": settings.stream_concurrency,
        "stream_window": settings.stream_window,
        "message_bytes": settings.message_bytes,
        "channels": settings.channels,
        "loadgen_procs": settings.loadgen_procs,
        "backends": BACKEND_COUNT,
        "quick": settings.quick,
        "grpcio_version": grpc.__version__,
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "total_elapsed_s": round(elapsed_s, 1),
    }


async def run(settings: Settings) -> dict[str, Any]:
    started_s = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ballast-bench-")))
        topology, loadgens, balancers = await start_all(stack, work_dir, settings)
        samples = await run_rounds(topology, settings, loadgens, balancers)
    return summarize(samples, context(settings, time.monotonic() - started_s))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"short run (< 60 s): {QUICK}")
    parser.add_argument(
        "--rounds", type=int, help=f"rounds of all cases (default {FULL['rounds']})"
    )
    parser.add_argument(
        "--duration-s", type=float, help=f"measured seconds per case (default {FULL['duration_s']})"
    )
    parser.add_argument(
        "--warmup-s", type=float, help=f"unmeasured seconds per case (default {FULL['warmup_s']})"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="unary workers at saturation")
    parser.add_argument("--stream-concurrency", type=int, default=8, help="bidi streams")
    parser.add_argument("--stream-window", type=int, default=16, help="messages in flight/stream")
    parser.add_argument("--message-bytes", type=int, default=128, help="request payload size")
    parser.add_argument("--channels", type=int, default=2, help="channels per load generator")
    parser.add_argument("--loadgen-procs", type=int, default=1, help="load generator processes")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Explicit flags win over the --quick or full presets."""
    preset = QUICK if args.quick else FULL
    timing = {
        key: preset[key] if getattr(args, key) is None else getattr(args, key) for key in preset
    }
    return Settings(
        rounds=int(timing["rounds"]),
        duration_s=float(timing["duration_s"]),
        warmup_s=float(timing["warmup_s"]),
        concurrency=args.concurrency,
        stream_concurrency=args.stream_concurrency,
        stream_window=args.stream_window,
        message_bytes=args.message_bytes,
        channels=args.channels,
        loadgen_procs=args.loadgen_procs,
        quick=args.quick,
    )


def main(argv: list[str]) -> int:
    settings = settings_from_args(parse_args(argv))
    try:
        report = asyncio.run(run(settings))
    except BenchError as error:
        print(f"proxy_overhead: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("proxy_overhead: interrupted; child processes stopped", file=sys.stderr)
        return 130
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
