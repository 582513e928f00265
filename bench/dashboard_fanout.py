"""Ballast dashboard fan-out: K websocket clients on one dashboard process, and what the
dashboard costs the balancer's throughput, as JSON.

Processes, each its own on 127.0.0.1: one echo backend serving ``--pods`` ports (the
pods of one service), one balancer in front of them with its admin API on, one load
generator (``loadgen.py --serve``, closed loop as in ``proxy_overhead.py``), and — in the
rounds "with the dashboard" only — the dashboard (``python -m dashboard``, its collector
embedded and watching the balancer every second) and a child process holding the K
websocket clients (``dashboard_clients.py``). The clients run in a child of their own so
that the bench's event loop, which times the rounds, neither slows them nor is slowed by
them, and so their CPU is measured apart from the dashboard's.

Each round measures the balancer's throughput twice, back to back, in alternating order:
without the dashboard (its process and the clients are not running) and with it (both
started for the case, every client receiving full frames before the load starts, both
stopped after it). Stopping the process rather than only disconnecting the clients is the
honest comparison: the dashboard also costs the balancer its snapshot stream and the
collector's CPU, which run whether or not anyone watches. During the "with" cases the
clients record every frame's latency (collector stamp → client receipt) and the
dashboard process's CPU time is sampled over the load's measured window.

Prints one JSON object as the last line of stdout (progress goes to stderr); without
``--quick`` it is also written to bench/results/dashboard_fanout.json. Exits 1 when a
client got no frame, a frame lacked pods, or a client was closed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets
from balancer_process import launch_balancer, wait_until_ready
from cases import Case, Sample, Settings, round_order, run_case
from dashboard_process import (
    COLLECTOR_INTERVAL_MS,
    DashboardSetup,
    connect_clients,
    launch_clients,
    launch_dashboard,
    log_in,
    prepare,
    read_url,
    send_line,
)
from loadgen import percentile_ms
from processes import BenchError, Child, read_json_line, start_child, stop_child
from proxy_overhead import check_alive, start_loadgen, unwrap_bench_errors
from summary import cores_used, median, medians, ratio, rounded

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "results" / "dashboard_fanout.json"
SERVICE = "echo"  # the cluster name in balancer_process.balancer_toml
STARTUP_TIMEOUT_S = 15.0
RESULT_TIMEOUT_S = 15.0
QUICK = {"rounds": 3, "round_s": 3.0, "warmup_s": 0.5}
FULL = {"rounds": 5, "round_s": 10.0, "warmup_s": 1.0}
# The goals hold for this many clients and pods (the setting); other sizes are
# measured but not judged.
GOAL_CLIENTS, GOAL_PODS = 100, 20
GOAL_P99_MS, GOAL_RATIO = 500.0, 0.95
WITHOUT, WITH = "without_dashboard", "with_dashboard"
MEDIAN_KEYS = (
    "asgi_cpu_percent",
    "clients_cpu_percent",
    "without_dashboard_rps",
    "with_dashboard_rps",
    "proxy_throughput_ratio_with_dashboard",
    "dashboard_ready_s",
)


@dataclass(frozen=True)
class FanoutSettings:
    clients: int
    pods: int
    load: Settings  # rounds, round_s (duration_s) and warm-up, and the load's shape

    def __post_init__(self) -> None:
        if self.clients < 1 or self.pods < 1:
            raise ValueError("clients and pods must be >= 1")


@dataclass(frozen=True)
class Fanout:
    """What the clients saw during one "with the dashboard" case."""

    frames: list[int]  # per client
    latencies_ns: list[int]
    wrong_pods: int
    closed: list[str]
    start_s: float  # dashboard start → every client had a full frame


@dataclass(frozen=True)
class Round:
    without: Sample
    with_dashboard: Sample
    fanout: Fanout


@dataclass
class Rig:
    """The running processes and what the "with" cases need to start the dashboard."""

    setup: DashboardSetup
    without: Case
    with_dashboard: Case  # the dashboard's and the clients' pids are added per round
    loadgens: list[Child]
    balancer: Child
    cookie: str | None = None  # logged in by the first "with" case; valid for the run


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def start_backends(stack: contextlib.AsyncExitStack, pods: int) -> tuple[Child, list[str]]:
    """One echo backend on ``pods`` ports (stopped by ``stack``); returns it and the addresses."""
    argv = [sys.executable, str(BENCH_DIR / "echo_backend.py"), "--ports", str(pods)]
    child = await start_child("echo-backends", argv)
    stack.push_async_callback(stop_child, child)
    ready = await read_json_line(child, STARTUP_TIMEOUT_S)
    return child, [f"127.0.0.1:{port}" for port in ready["ports"]]


async def start_balancer(
    stack: contextlib.AsyncExitStack, work_dir: Path, backends: list[str], token: str
) -> tuple[Child, str, str]:
    """The balancer with its admin API (stopped by ``stack``); returns it, its listener and
    its admin address."""
    child, ready_path = await launch_balancer(
        "balancer", work_dir, backends, record_stats=True, admin_token=token
    )
    stack.push_async_callback(stop_child, child)
    listener = await wait_until_ready(child, ready_path)
    return child, listener, str(json.loads(ready_path.read_text())["admin"])


async def start_rig(
    stack: contextlib.AsyncExitStack, work_dir: Path, settings: FanoutSettings
) -> Rig:
    with unwrap_bench_errors():
        async with asyncio.TaskGroup() as group:
            backends_task = group.create_task(start_backends(stack, settings.pods))
            loadgen_task = group.create_task(start_loadgen(stack, "loadgen"))
    (backends, addresses), loadgen = backends_task.result(), loadgen_task.result()
    token = secrets.token_urlsafe(24)
    balancer, listener, admin = await start_balancer(stack, work_dir, addresses, token)
    setup = await prepare(work_dir, SERVICE, admin, token)
    cpu_pids = {"loadgen": (loadgen.pid,), "backends": (backends.pid,), "proxy": (balancer.pid,)}
    without = Case(WITHOUT, "unary", (listener,), settings.load.concurrency, cpu_pids)
    with_dashboard = dataclasses.replace(without, name=WITH)
    return Rig(setup, without, with_dashboard, [loadgen], balancer)


def with_case(rig: Rig, dashboard: Child, clients: Child) -> Case:
    pids = {**rig.without.cpu_pids, "dashboard": (dashboard.pid,), "clients": (clients.pid,)}
    return dataclasses.replace(rig.with_dashboard, cpu_pids=pids)


async def start_watching(
    stack: contextlib.AsyncExitStack, rig: Rig, settings: FanoutSettings, round_index: int
) -> tuple[Child, Child, float]:
    """The dashboard and its K clients (stopped by ``stack``, clients first), each client
    with a full frame; returns both and how long that took."""
    started_s = time.monotonic()
    dashboard = await launch_dashboard(rig.setup, f"dashboard-{round_index}")
    stack.push_async_callback(stop_child, dashboard)
    base_url = await read_url(dashboard)
    if rig.cookie is None:
        rig.cookie = await asyncio.to_thread(log_in, base_url, rig.setup.password)
    clients = await launch_clients(f"clients-{round_index}", rig.setup.work_dir)
    stack.push_async_callback(stop_child, clients)
    await connect_clients(clients, base_url, rig.setup, rig.cookie, settings.clients, settings.pods)
    return dashboard, clients, time.monotonic() - started_s


async def measure_with(
    rig: Rig, settings: FanoutSettings, round_index: int
) -> tuple[Sample, Fanout]:
    async with contextlib.AsyncExitStack() as stack:
        dashboard, clients, start_s = await start_watching(stack, rig, settings, round_index)
        case = with_case(rig, dashboard, clients)
        await send_line(clients, "start")
        sample = await run_case(case, round_index, settings.load, rig.loadgens)
        await send_line(clients, "stop")
        seen = await read_json_line(clients, RESULT_TIMEOUT_S)
        check_alive([dashboard, clients, rig.balancer])
    fanout = Fanout(
        seen["frames"], seen["latencies_ns"], seen["wrong_pods"], seen["closed"], start_s
    )
    return sample, fanout


def log_round(
    round_index: int, settings: FanoutSettings, sample: Sample, fanout: Fanout | None
) -> None:
    line = f"round {round_index + 1}/{settings.load.rounds} {sample.case}: {sample.rps:.0f}/s"
    if fanout is not None:
        p99_ms = percentile_ms(sorted(fanout.latencies_ns), 0.99)
        cpu_percent = sample.cpu_s["dashboard"] / sample.window_s * 100
        line += (
            f", {sum(fanout.frames)} frames, p99 {p99_ms:.0f} ms, dashboard CPU {cpu_percent:.0f} %"
            f", started in {fanout.start_s:.1f} s"
        )
    say(line)


async def measure(
    rig: Rig, settings: FanoutSettings, case: Case, round_index: int
) -> tuple[Sample, Fanout | None]:
    if case is rig.with_dashboard:
        return await measure_with(rig, settings, round_index)
    sample = await run_case(case, round_index, settings.load, rig.loadgens)
    check_alive([rig.balancer])
    return sample, None


async def run_rounds(rig: Rig, settings: FanoutSettings) -> list[Round]:
    rounds = []
    for round_index in range(settings.load.rounds):
        seen: dict[str, tuple[Sample, Fanout | None]] = {}
        for case in round_order([[rig.without, rig.with_dashboard]], round_index):
            seen[case.name] = await measure(rig, settings, case, round_index)
            log_round(round_index, settings, *seen[case.name])
        (without, _), (with_dashboard, fanout) = seen[WITHOUT], seen[WITH]
        assert fanout is not None
        rounds.append(Round(without, with_dashboard, fanout))
    return rounds


def round_metrics(one: Round) -> dict[str, float | None]:
    window_s = one.with_dashboard.window_s
    return {
        "without_dashboard_rps": one.without.rps,
        "with_dashboard_rps": one.with_dashboard.rps,
        "proxy_throughput_ratio_with_dashboard": ratio(one.with_dashboard.rps, one.without.rps),
        "frame_latency_p50_ms": percentile_ms(sorted(one.fanout.latencies_ns), 0.50),
        "frame_latency_p99_ms": percentile_ms(sorted(one.fanout.latencies_ns), 0.99),
        "asgi_cpu_percent": one.with_dashboard.cpu_s["dashboard"] / window_s * 100,
        "clients_cpu_percent": one.with_dashboard.cpu_s["clients"] / window_s * 100,
        "dashboard_ready_s": one.fanout.start_s,
    }


def fanout_checks(rounds: list[Round]) -> dict[str, Any]:
    """What must be zero: clients without frames, frames without every pod, closed clients."""
    return {
        "load_errors": sum(one.without.errors + one.with_dashboard.errors for one in rounds),
        "clients_without_frames": sum(one.fanout.frames.count(0) for one in rounds),
        "frames_with_wrong_pods": sum(one.fanout.wrong_pods for one in rounds),
        "clients_closed": [reason for one in rounds for reason in one.fanout.closed],
    }


def goal(value: float | None, bound: float, at_most: bool, judged: bool) -> dict[str, Any]:
    """One goal: ``value`` <= ``bound`` (``at_most``) or >= it; ``met`` is null when the run
    is not judged or the value is missing."""
    met = None
    if judged and value is not None:
        met = value <= bound if at_most else value >= bound
    return {"value": value, "goal": f"{'<=' if at_most else '>='} {bound:g}", "met": met}


def goals(report: dict[str, Any], settings: FanoutSettings) -> dict[str, Any]:
    """Each goal with its value, judged only at the goals' size (clients and pods)."""
    judged = (settings.clients, settings.pods) == (GOAL_CLIENTS, GOAL_PODS)
    p99_ms = report["frame_latency_p99_ms"]
    throughput = report["proxy_throughput_ratio_with_dashboard"]
    return {
        "for": {"clients": GOAL_CLIENTS, "pods": GOAL_PODS},
        "frame_latency_p99_ms": goal(p99_ms, GOAL_P99_MS, True, judged),
        "proxy_throughput_ratio_with_dashboard": goal(throughput, GOAL_RATIO, False, judged),
    }


def fanout_rounded(key: str, value: float | None) -> float | None:
    """``summary.rounded``, and one decimal for percentages, two for seconds."""
    if value is not None and key.endswith(("_percent", "_s")):
        return round(value, 1 if key.endswith("_percent") else 2)
    return rounded(key, value)


def frame_figures(rounds: list[Round]) -> dict[str, Any]:
    """Latencies pooled over every "with" case of every round and client."""
    latencies_ns = sorted(ns for one in rounds for ns in one.fanout.latencies_ns)
    per_client = [frames for one in rounds for frames in one.fanout.frames]
    return {
        "frame_latency_p50_ms": rounded("_ms", percentile_ms(latencies_ns, 0.50)),
        "frame_latency_p99_ms": rounded("_ms", percentile_ms(latencies_ns, 0.99)),
        "frame_latency_max_ms": rounded("_ms", latencies_ns[-1] / 1e6 if latencies_ns else None),
        "frames_received": len(latencies_ns),
        "frames_per_client_min": min(per_client),
        "frames_per_client_max": max(per_client),
    }


def summarize(rounds: list[Round], settings: FanoutSettings, elapsed_s: float) -> dict[str, Any]:
    """The report: frame latencies pooled over every round; the other figures are medians of
    per-round values (the ratio a median of per-round ratios), with each round's beside."""
    per_round = [round_metrics(one) for one in rounds]
    typical = {
        key: fanout_rounded(key, median([m[key] for m in per_round])) for key in per_round[0]
    }
    report: dict[str, Any] = {
        "clients": settings.clients,
        "pods": settings.pods,
        "rounds": settings.load.rounds,
        **frame_figures(rounds),
        **{key: typical[key] for key in MEDIAN_KEYS},
    }
    report["goals"] = goals(report, settings)
    report["per_round"] = {
        key: [fanout_rounded(key, m[key]) for m in per_round] for key in per_round[0]
    }
    report["cores_used"] = {
        WITHOUT: medians([cores_used(one.without) for one in rounds]),
        WITH: medians([cores_used(one.with_dashboard) for one in rounds]),
    }
    report["errors"] = fanout_checks(rounds)
    report.update(context(settings, elapsed_s))
    return report


def context(settings: FanoutSettings, elapsed_s: float) -> dict[str, Any]:
    load = settings.load
    return {
        "round_s": load.duration_s,
        "warmup_s": load.warmup_s,
        "collector_interval_ms": COLLECTOR_INTERVAL_MS,
        "concurrency": load.concurrency,
        "message_bytes": load.message_bytes,
        "channels": load.channels,
        "quick": load.quick,
        "websockets_version": websockets.__version__,
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "total_elapsed_s": round(elapsed_s, 1),
    }


async def run(settings: FanoutSettings) -> dict[str, Any]:
    started_s = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ballast-fanout-")))
        rig = await start_rig(stack, work_dir, settings)
        say(f"started: {settings.pods} pods, balancer, load generator; {settings.clients} clients")
        rounds = await run_rounds(rig, settings)
    return summarize(rounds, settings, time.monotonic() - started_s)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"short run (< 60 s): {QUICK}")
    parser.add_argument("--clients", type=int, default=GOAL_CLIENTS, help="websocket clients")
    parser.add_argument("--pods", type=int, default=GOAL_PODS, help="backends of the service")
    parser.add_argument("--rounds", type=int, help=f"rounds (default {FULL['rounds']})")
    parser.add_argument(
        "--round-s", type=float, help=f"measured seconds per case (default {FULL['round_s']})"
    )
    parser.add_argument(
        "--warmup-s", type=float, help=f"unmeasured load per case (default {FULL['warmup_s']})"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop unary workers")
    parser.add_argument("--message-bytes", type=int, default=128, help="request payload size")
    parser.add_argument("--channels", type=int, default=2, help="load generator channels")
    return parser.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> FanoutSettings:
    """Explicit flags win over the --quick or full presets."""
    preset = QUICK if args.quick else FULL
    timing = {
        key: preset[key] if getattr(args, key) is None else getattr(args, key) for key in preset
    }
    load = Settings(
        rounds=int(timing["rounds"]),
        duration_s=float(timing["round_s"]),
        warmup_s=float(timing["warmup_s"]),
        concurrency=args.concurrency,
        stream_concurrency=1,  # no stream cases here
        stream_window=1,
        message_bytes=args.message_bytes,
        channels=args.channels,
        loadgen_procs=1,
        quick=args.quick,
    )
    return FanoutSettings(clients=args.clients, pods=args.pods, load=load)


def failures(report: dict[str, Any]) -> list[str]:
    errors = report["errors"]
    found = [
        f"{key}: {errors[key]}" for key in ("clients_without_frames", "frames_with_wrong_pods")
    ]
    found = [line for line in found if not line.endswith(": 0")]
    if errors["clients_closed"]:
        found.append(f"clients closed: {sorted(set(errors['clients_closed']))}")
    return found


def main(argv: list[str]) -> int:
    settings = settings_from_args(parse_args(argv))
    try:
        report = asyncio.run(run(settings))
    except BenchError as error:
        print(f"dashboard_fanout: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dashboard_fanout: interrupted; child processes stopped", file=sys.stderr)
        return 130
    if not settings.load.quick:
        RESULTS_PATH.write_text(json.dumps(report, indent=4) + "\n")
    print(json.dumps(report))
    if problems := failures(report):
        print(f"dashboard_fanout: {'; '.join(problems)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
