"""Ballast auto-weights: weights from the pods' CPU (gRPC's WRR formula without ORCA), measured.

Four pods of the demo workload (real processes on the local platform), one of them burning
twice the CPU per call (its `cpu_ms` knob, set through Knobs.Set), behind a real Ballast
balancer (round robin) with paced long-lived clients calling through it; the dashboard's
control plane (collector, reconciler, auto-weights controller, SQLite in a temporary
folder) in the same event loop. First a window with autoweights off (plain round robin),
then autoweights turned on (as an operator would, audited) and, after the weights settled,
a window with them. Each pod's CPU is its processes' CPU time over the window (psutil).

The last line of stdout is one JSON object (see bench/README.md); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psutil

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from demo.loadgen import LoadGenerator  # noqa: E402
from demo.scene import SERVICE, Scene, SceneOptions, client_group  # noqa: E402
from demo.v1 import workload_pb2 as pb  # noqa: E402
from demo.workload.knobs import set_knobs  # noqa: E402

STARTED_S = time.monotonic()
SETTLE_BAND = 0.05  # weights within 5 % of their final values


@dataclass(frozen=True)
class Timings:
    warmup_s: float
    without_s: float  # the window with autoweights off
    settle_s: float  # autoweights on, before the window with them
    with_s: float


QUICK = Timings(warmup_s=4.0, without_s=20.0, settle_s=45.0, with_s=20.0)
FULL = Timings(warmup_s=5.0, without_s=60.0, settle_s=60.0, with_s=60.0)


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED_S:6.1f} s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short windows (under 120 s)")
    parser.add_argument("--cpu-ms", type=float, default=3.0, help="CPU per call, ms (3)")
    parser.add_argument("--slow-factor", type=float, default=2.0, help="the slow pod's (2×)")
    parser.add_argument("--clients", type=int, default=8, help="clients through Ballast (8)")
    parser.add_argument("--rate", type=float, default=5.0, help="calls/s per client (5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    return parser.parse_args(argv)


# ---- the dashboard's control plane, in this process ----------------------------------------


def prepare_django(workdir: Path) -> None:
    """Django on a fresh SQLite file in `workdir`: the real settings, the in-memory layer."""
    from dashboard.server import migrate, setup_django

    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    setup_django(
        BALLAST_DEV="1", BALLAST_SERVICES=SERVICE, BALLAST_DB_PATH=str(workdir / "db.sqlite3")
    )
    migrate()


@contextlib.asynccontextmanager
async def control_plane(scene: Scene) -> AsyncIterator[Any]:
    from dashboard.app.collecting import ControlPlane, collector_config

    replicas = {scene.balancer.config.id: scene.balancer.admin_address or ""}
    plane = ControlPlane(collector_config(replicas, scene.admin_token), platform=scene.platform)
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop()


async def set_autoweights(on: bool) -> None:
    from asgiref.sync import sync_to_async

    from dashboard.control import automation
    from dashboard.control.actions import Actor

    await sync_to_async(automation.set_switches)(Actor("bench"), SERVICE, {"autoweights": on})


async def audited_auto_weights() -> int:
    from dashboard.control import automation
    from dashboard.control.models import AuditEvent

    return await AuditEvent.objects.filter(action=automation.AUTO_WEIGHT).acount()


# ---- pods, CPU, weights --------------------------------------------------------------------


async def set_cpu_ms(address: str, cpu_ms: float) -> None:
    await set_knobs(address, pb.KnobSettings(cpu_ms=cpu_ms))


def pod_processes(names: Sequence[str]) -> dict[str, list[psutil.Process]]:
    """Each pod's processes (its launcher and the workload), by `--name` on the command line."""
    found: dict[str, list[psutil.Process]] = {name: [] for name in names}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            cmdline = child.cmdline()
            for name in names:
                if name in cmdline:
                    found[name].append(child)
    return found


def cpu_seconds(processes: Mapping[str, list[psutil.Process]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, procs in processes.items():
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        out[name] = total
    return out


async def cpu_window(
    processes: Mapping[str, list[psutil.Process]], seconds: float, weights: WeightLog
) -> dict[str, float]:
    """Cores each pod used over the next `seconds` (weights logged meanwhile)."""
    before, started = cpu_seconds(processes), time.monotonic()
    await weights.follow(seconds)
    after, elapsed = cpu_seconds(processes), time.monotonic() - started
    return {name: (after[name] - before[name]) / elapsed for name in processes}


def max_mean(values: Mapping[str, float]) -> float:
    mean = sum(values.values()) / len(values)
    return round(max(values.values()) / mean, 3) if mean > 0 else 0.0


class WeightLog:
    """The balancer's weight of every pod, sampled every `every_s` (seconds since `t0`)."""

    def __init__(self, scene: Scene, pods: Sequence[str], every_s: float = 1.0) -> None:
        self._cluster = scene.balancer.clusters[SERVICE]
        self.pods = list(pods)
        self.every_s = every_s
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, dict[str, int]]] = []

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.samples = []

    def sample(self) -> None:
        endpoints = self._cluster.endpoints
        weights = {p: int(endpoints[p].weight) for p in self.pods if p in endpoints}
        self.samples.append((round(time.monotonic() - self.t0, 1), weights))

    async def follow(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sample()
            await asyncio.sleep(min(self.every_s, left))

    def settling(self) -> tuple[float | None, float]:
        """When every weight entered 5 % of its final value for good (seconds since
        `start`; None: never), and the largest swing after that (max − min over final)."""
        if not self.samples:
            return None, 0.0
        final = self.samples[-1][1]

        def within(weights: Mapping[str, int]) -> bool:
            return all(abs(weights[p] - final[p]) <= SETTLE_BAND * final[p] for p in final)

        settled_at: float | None = None  # the first sample of the last run within the band
        for t, weights in self.samples:
            if not within(weights):
                settled_at = None
            elif settled_at is None:
                settled_at = t
        if settled_at is None:
            return None, 0.0
        after = [w for t, w in self.samples if t >= settled_at]
        swing = max((max(w[p] for w in after) - min(w[p] for w in after)) / final[p] for p in final)
        return settled_at, round(swing, 3)

    def timeline(self, every_s: float = 5.0) -> list[dict[str, Any]]:
        """Every `every_s`-th sample, for the report."""
        out, next_t = [], 0.0
        for t, weights in self.samples:
            if t >= next_t:
                out.append({"t_s": t, "weights": [weights.get(p) for p in self.pods]})
                next_t = t + every_s
        return out


# ---- the run -------------------------------------------------------------------------------


async def run(args: argparse.Namespace, timings: Timings) -> dict[str, Any]:
    knobs = {"BALLAST_KNOB_CPU_MS": f"{args.cpu_ms:g}"}
    options = SceneOptions(
        seed=args.seed, pods=4, clients_per_group=0, policy="round_robin", knobs=knobs
    )
    scene = Scene(options)
    await scene.start()
    load: LoadGenerator | None = None
    try:
        async with control_plane(scene):
            pods = {p.name: p.address for p in await scene.platform.list_pods(SERVICE)}
            names = sorted(pods)
            slow = names[0]
            await set_cpu_ms(pods[slow] or "", args.cpu_ms * args.slow_factor)
            say(f"pods {', '.join(names)}; {slow} burns {args.slow_factor:g}× the CPU per call")
            target = scene.balancer.listen_addresses[0]
            clients = replace(options, clients_per_group=args.clients, rate_per_client=args.rate)
            load = LoadGenerator(
                client_group("ballast", target, clients), rng=random.Random(args.seed)
            )
            await load.start()
            processes = pod_processes(names)
            weights = WeightLog(scene, names)
            await weights.follow(timings.warmup_s)
            say(f"round robin, autoweights off: measuring {timings.without_s:g} s")
            without = await cpu_window(processes, timings.without_s, weights)
            say("autoweights on")
            weights.start()
            await set_autoweights(True)
            await weights.follow(timings.settle_s)
            say(f"weights now {weights.samples[-1][1]}; measuring {timings.with_s:g} s")
            with_ = await cpu_window(processes, timings.with_s, weights)
            settle_s, swing = weights.settling()
            stats = load.stats()
            report = {
                "cpu_max_mean_without": max_mean(without),
                "cpu_max_mean_with": max_mean(with_),
                "settle_s": settle_s,
                "max_swing_after_settle": swing,
                "pods": names,
                "slow_pod": slow,
                "cores_without": [round(without[n], 3) for n in names],
                "cores_with": [round(with_[n], 3) for n in names],
                "final_weights": [weights.samples[-1][1].get(n) for n in names],
                "weights_timeline": weights.timeline(),
                "auto_weight_audit_rows": await audited_auto_weights(),
                "client_calls": stats.sent,
                "client_errors": {c: n for c, n in stats.codes.items() if c != "OK"},
            }
            await load.stop(grace_s=1.0)
            return report
    finally:
        if load is not None:
            await load.stop(grace_s=0)
        await scene.stop()


def goals(report: Mapping[str, Any]) -> dict[str, Any]:
    settle = report["settle_s"]
    return {
        "cpu_max_mean_with": {"value": report["cpu_max_mean_with"], "goal": "<= 1.15",
                              "met": report["cpu_max_mean_with"] <= 1.15},
        "settle_s": {"value": settle, "goal": "<= 60, no oscillation after",
                     "met": settle is not None and settle <= 60},
    }  # fmt: skip


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    timings = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory(prefix="ballast-autoweights-") as workdir:
        prepare_django(Path(workdir))
        try:
            report = asyncio.run(run(args, timings))
        except KeyboardInterrupt:
            print("autoweights: interrupted; pods and clients stopped", file=sys.stderr)
            return 130
    report["goals"] = goals(report)
    report.update(
        mode="quick" if args.quick else "full",
        timings=timings.__dict__,
        load={"pods": 4, "clients": args.clients, "rate_per_client": args.rate,
              "cpu_ms": args.cpu_ms, "slow_factor": args.slow_factor},
        grpcio_version=grpc.__version__,
        python_version=platform.python_version(),
        cpu_count=os.cpu_count(),
        total_elapsed_s=round(time.monotonic() - STARTED_S, 1),
    )  # fmt: skip
    for name, goal in report["goals"].items():
        say(f"goal {name}: {goal['value']} {goal['goal']} → {goal['met']}")
    line = json.dumps(report)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
