"""`make demo` runs `python -m demo`: pods, the L4 Service, Ballast, clients and the dashboard."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psutil

# pod, ready, state, weight, via L4/s, via Ballast/s, proxyless/s
ROW = re.compile(r"^(inventory-\w+-\w+)\s+yes\s+READY\s+100\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)")


def test_it_shows_all_three_client_groups_reaching_every_pod_and_stops_cleanly(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--port", "0", "--admin-port", "0", "--l4-port", "0",
         "--dashboard-port", "0", "--xds-port", "0", "--pods", "3", "--clients", "4", "--table",
         "--every-s", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "BALLAST_DB_PATH": str(tmp_path / "db.sqlite3")},
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        pods_seen: dict[str, tuple[float, float, float]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _every_pod_served(pods_seen):
            line = process.stdout.readline()
            lines.append(line)
            if match := ROW.match(line):
                pods_seen[match[1]] = (float(match[2]), float(match[3]), float(match[4]))
        assert _every_pod_served(pods_seen), "".join(lines)
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 3  # the pods are real processes

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        rest = process.stdout.read()
        summary = re.search(r"^proxyless clients: (\d+) calls in .*$", rest, re.MULTILINE)
        assert summary is not None and int(summary[1]) > 0, rest
        assert summary[0].endswith("all OK"), summary[0]
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
    finally:
        process.kill()
        process.wait()


def _every_pod_served(pods: dict[str, tuple[float, float, float]]) -> bool:
    """Three pods, and Ballast's clients and the proxyless ones (balanced by its xDS server)
    reached each of them (the L4 side may miss some)."""
    return len(pods) == 3 and all(b > 0 and px > 0 for _, b, px in pods.values())
