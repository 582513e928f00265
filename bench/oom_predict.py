"""The OOM guard against the OOM killer: leaky pods, the same load, the guard off then on.

Each case runs the demo scene (`demo/scene.py`: real pods as processes on the local
platform, which kills a pod over its memory limit as the kubelet would and records
OOMKilled; a real balancer; long-lived clients through Ballast and through the L4
Service) with every pod leaking `--leak-bytes` per call (the workload's
`BALLAST_KNOB_LEAK_BYTES`) under `--limit-mib`, and the dashboard's control plane beside
it (collector, reconciler, restarts through the platform, the OOM guard) on a SQLite
database of its own. The first case has the service's `oom_guard` off, the second on;
both run `--phase-s` of the same load from a fresh scene.

The last line of stdout is one JSON object: `oomkilled_without` / `oomkilled_with` (the
platform's OOM kills; goal 0 with the guard), `client_errors_without` /
`client_errors_with` (calls through Ballast that failed; goal 0 with the guard),
`guard_restarts` (restarts the guard started) and `calls_with` (calls through Ballast
with the guard). Progress goes to stderr. Without ``--quick`` it is also written to
bench/results/oom_predict.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
RESULTS = Path(__file__).parent / "results" / "oom_predict.json"
QUICK = {"phase_s": 55.0, "leak_bytes": 40 * 1024, "limit_mib": 112, "threshold_s": 60}
FULL = {"phase_s": 120.0, "leak_bytes": 40 * 1024, "limit_mib": 112, "threshold_s": 60}


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prepare_django(workdir: Path) -> None:
    """Django on a SQLite file of its own, migrated (the guard reads its switch there)."""
    from dashboard.server import migrate, setup_django

    setup_django(
        BALLAST_DEV="1", BALLAST_SERVICES="inventory",
        BALLAST_DB_PATH=str(workdir / "db.sqlite3"), BALLAST_COLLECTOR_INTERVAL_MS="500",
    )  # fmt: skip
    migrate()


async def run_case(guard_on: bool, settings: dict[str, Any]) -> dict[str, int]:
    """One case from a fresh scene: OOM kills, client errors and guard restarts."""
    from dashboard.app.collecting import ControlPlane, collector_config
    from dashboard.control.models import AuditEvent, ServiceAutomation
    from dashboard.control.oomguard import ACTION, GuardConfig
    from demo.scene import SERVICE, Scene, SceneOptions

    await ServiceAutomation.objects.aupdate_or_create(
        service=SERVICE, defaults={"oom_guard": guard_on}
    )
    knobs = {"BALLAST_KNOB_LATENCY_MS": "2",
             "BALLAST_KNOB_LEAK_BYTES": str(settings["leak_bytes"])}  # fmt: skip
    options = SceneOptions(
        pods=2, clients_per_group=2, rate_per_client=20, seed=3, knobs=knobs,
        memory_limit_bytes=settings["limit_mib"] * MiB,
    )  # fmt: skip
    scene = Scene(options)
    await scene.start()
    target = {"scene": scene.balancer.admin_address or ""}
    control = ControlPlane(collector_config(target, scene.admin_token), platform=scene.platform)
    control.oom_guard.config = GuardConfig(threshold_s=settings["threshold_s"], interval_s=1)
    await control.start()
    before = await AuditEvent.objects.filter(action=ACTION, result="ok").acount()
    try:
        assert scene.via_ballast is not None
        scene.reset_load()
        await asyncio.sleep(settings["phase_s"])
        stats = scene.via_ballast.stats()
        kills = [e for e in scene.platform.events()
                 if e.kind == "Killing" and e.detail.startswith("OOMKilled")]  # fmt: skip
    finally:
        await control.stop()
        await scene.stop()
    restarts = await AuditEvent.objects.filter(action=ACTION, result="ok").acount() - before
    return {"oomkilled": len(kills), "client_errors": stats.errors, "calls": stats.completed,
            "guard_restarts": restarts}  # fmt: skip


async def run(settings: dict[str, Any]) -> dict[str, Any]:
    without = await run_case(False, settings)
    say(f"guard off: {without}")
    with_guard = await run_case(True, settings)
    say(f"guard on: {with_guard}")
    return {
        "oomkilled_without": without["oomkilled"],
        "oomkilled_with": with_guard["oomkilled"],
        "client_errors_without": without["client_errors"],
        "client_errors_with": with_guard["client_errors"],
        "guard_restarts": with_guard["guard_restarts"],
        "calls_without": without["calls"],
        "calls_with": with_guard["calls"],
        "settings": settings,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"short run (< 150 s): {QUICK}")
    parser.add_argument("--leak-bytes", type=int, help="memory each call leaks in every pod")
    args = parser.parse_args(argv)
    settings: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.leak_bytes is not None:
        if args.leak_bytes <= 0:
            parser.error(f"--leak-bytes must be positive, got {args.leak_bytes}")
        settings["leak_bytes"] = args.leak_bytes
    with tempfile.TemporaryDirectory(prefix="oom-predict-") as workdir:
        prepare_django(Path(workdir))
        report = asyncio.run(run(settings))
    if not args.quick:
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
