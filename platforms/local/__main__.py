"""Runs one local Deployment from flags and prints its pods: for trying the platform by hand.

    python -m platforms.local --name inventory --replicas 3 -- \\
        python tests/support/pod.py --port {port} --name {name}

Prints a pod table every `--print-every-s` (`--json`: one JSON object per line,
`{"pods": [...]}` with each pod's facts and pid). Ctrl-C or SIGTERM stops the
pods and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any

from platforms.base import PodFacts
from platforms.local.platform import LocalPlatform
from platforms.local.spec import DeploymentSpec, ProbeSpec

COLUMNS = (
    "name", "phase", "ready", "restart_count", "last_termination_reason", "address",
    "cpu_millicores", "memory_bytes",
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m platforms.local", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--name", default="pods", help="deployment name (default: pods)")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--memory-limit-bytes", type=int, default=None)
    parser.add_argument("--grace-s", type=float, default=5.0, help="termination grace period")
    parser.add_argument("--probe-interval-s", type=float, default=1.0)
    parser.add_argument("--sample-interval-s", type=float, default=1.0)
    parser.add_argument("--print-every-s", type=float, default=2.0)
    parser.add_argument("--log-dir", type=Path, default=None, help="where pod output goes")
    parser.add_argument("--json", action="store_true", help="print JSON lines, not a table")
    parser.add_argument("argv", nargs="+", help="the pod's command, after --")
    return parser


def _spec(args: argparse.Namespace) -> DeploymentSpec:
    return DeploymentSpec(
        name=args.name,
        argv=tuple(args.argv),
        replicas=args.replicas,
        memory_limit_bytes=args.memory_limit_bytes,
        termination_grace_s=args.grace_s,
        probe=ProbeSpec(interval_s=args.probe_interval_s),
    )


def _json_line(pods: list[PodFacts], platform: LocalPlatform) -> str:
    rows: list[dict[str, Any]] = []
    for facts in pods:
        rows.append({**dataclasses.asdict(facts), "pid": platform.pod_pid(facts.name)})
    return json.dumps({"pods": rows})


def _table(pods: list[PodFacts]) -> str:
    def cell(value: object) -> str:
        return f"{value:.0f}" if isinstance(value, float) else str(value)

    rows = [COLUMNS] + [tuple(cell(getattr(f, c)) for c in COLUMNS) for f in pods]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace, spec: DeploymentSpec) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalPlatform(
        [spec], sample_interval_s=args.sample_interval_s, log_dir=args.log_dir
    ) as platform:
        while not stop.is_set():
            pods = await platform.list_pods(args.name)
            print(_json_line(pods, platform) if args.json else _table(pods), flush=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.print_every_s)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        spec = _spec(args)
    except ValueError as err:
        print(f"python -m platforms.local: {err}", file=sys.stderr)
        return 2
    asyncio.run(run(args, spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
