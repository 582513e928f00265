"""Ballast balance quality: what per-request balancing fixes, measured next to an L4 Service.

Six scenarios, each on its own scene of demo pods (real processes) with two client groups
calling at once, one through a kube-proxy-like L4 Service emulator and one through Ballast:
pinning after a rollout restart, weights 1:2:5 under every policy, one slow pod, draining a pod
with streams in flight, restarting a pod through the platform, latency spikes on five identical
pods (noise). Prints one JSON object as the last line of stdout (with a `goals` section);
progress goes to stderr. See bench/README.md.
A seventh, `retries` (balance_retries.py), runs its own pods and two balancers: one pod failing
30 % of its calls, client error rates without and with retries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from balance_lifecycle import drain, restart
from balance_measure import ENGINES, goals
from balance_noise import noise
from balance_retries import retries
from balance_scenarios import FULL, QUICK, SMOKE, Timings, pinning, slow_pod, timings_dict, weights
from balance_scene import STRAY_HAPROXY, say

Scenario = Callable[[Timings, int | None, str], Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {
    "pinning": pinning,
    "weights": weights,
    "slow_pod": slow_pod,
    "drain": drain,
    "restart": restart,
    "noise": noise,
    "retries": retries,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="short windows (about 65 s)")
    sizes.add_argument(
        "--smoke", action="store_true", help="tiny windows, numbers meaningless (about 30 s)"
    )
    parser.add_argument(
        "--only",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=list(SCENARIOS),
        help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument("--seed", type=int, default=1, help="seeds pod names and clients (1)")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="embedded",
        help="what carries Ballast's calls ([balancer] engine; default embedded)",
    )
    args = parser.parse_args(argv)
    if unknown := [name for name in args.only if name not in SCENARIOS]:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; use {', '.join(SCENARIOS)}")
    return args


def mode_of(args: argparse.Namespace) -> tuple[str, Timings]:
    if args.smoke:
        return "smoke", SMOKE
    return ("quick", QUICK) if args.quick else ("full", FULL)


async def run(names: list[str], timings: Timings, seed: int | None, engine: str) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name in names:
        started_s = time.monotonic()
        say(f"{name}: starting")
        report[name] = await SCENARIOS[name](timings, seed, engine)
        report[name]["elapsed_s"] = round(time.monotonic() - started_s, 1)
        say(f"{name}: done in {report[name]['elapsed_s']} s")
    return report


def context(
    mode: str, timings: Timings, seed: int | None, engine: str, elapsed_s: float
) -> dict[str, Any]:
    return {
        "mode": mode,
        "engine": engine,
        "timings": timings_dict(timings),
        "seed": seed,
        "grpcio_version": grpc.__version__,
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "total_elapsed_s": round(elapsed_s, 1),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    mode, timings = mode_of(args)
    started_s = time.monotonic()
    try:
        report = asyncio.run(run(args.only, timings, args.seed, args.engine))
    except KeyboardInterrupt:
        print("balance_quality: interrupted; pods and clients stopped", file=sys.stderr)
        return 130
    except (OSError, TimeoutError) as error:
        print(f"balance_quality: {error!r}", file=sys.stderr)
        return 1
    report["goals"] = goals(report, args.engine)
    # HAProxy processes the engine lost track of (killed when each scene stopped).
    report["stray_haproxy_processes"] = sum(STRAY_HAPROXY)
    elapsed_s = time.monotonic() - started_s
    report.update(context(mode, timings, args.seed, args.engine, elapsed_s))
    for name, goal in report["goals"].items():
        say(f"goal {name}: {goal['value']} {goal['goal']} → {goal['met']}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
