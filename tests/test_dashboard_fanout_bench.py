"""bench/dashboard_fanout.py: a tiny run end to end (numbers meaningless, only that it works)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
TINY = ["--quick", "--clients", "3", "--pods", "3", "--rounds", "1", "--round-s", "1.5"]


def _bench_children() -> set[int]:
    """The processes the bench starts that are not plain library code: dashboard, clients."""
    pids = set()
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "dashboard_clients.py" in " ".join(cmdline) or cmdline[-3:] == [
            "dashboard",
            "--port",
            "0",
        ]:
            pids.add(process.pid)
    return pids


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.timeout(60)
def test_it_streams_frames_to_every_client_and_prints_one_json_report():
    before = _bench_children()
    done = subprocess.run(
        [sys.executable, str(BENCH / "dashboard_fanout.py"), *TINY],
        capture_output=True, text=True, timeout=50, cwd=BENCH.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    assert (report["clients"], report["pods"], report["rounds"]) == (3, 3, 1)
    assert report["frames_per_client_min"] > 0
    assert report["frames_received"] >= 3
    assert 0 < report["frame_latency_p50_ms"] <= report["frame_latency_p99_ms"]
    assert _positive(report["without_dashboard_rps"]) and _positive(report["with_dashboard_rps"])
    assert _positive(report["proxy_throughput_ratio_with_dashboard"])
    assert report["asgi_cpu_percent"] >= 0
    assert report["errors"] == {
        "load_errors": 0,
        "clients_without_frames": 0,
        "frames_with_wrong_pods": 0,
        "clients_closed": [],
    }
    # A run of another size than the goals' is measured but not judged.
    assert report["goals"]["frame_latency_p99_ms"]["met"] is None
    assert not [pid for pid in _bench_children() - before if psutil.pid_exists(pid)]
