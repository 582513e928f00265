"""`python -m demo`'s exit summary counts what the clients got while the demo ran, not
the teardown: after a clean run every call was OK."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from demo.__main__ import group_summary

ROW = re.compile(r"^(inventory-\w+-\w+)\s+yes\s+READY\s+100\s+([\d.]+)\s+([\d.]+)")
SUMMARY = re.compile(r"^clients via (L4|Ballast): (\d+) calls in \d+ s, (.*)$")


def test_a_clean_run_ends_with_every_call_ok(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "demo", "--port", "0", "--admin-port", "0", "--l4-port", "0",
         "--dashboard-port", "0", "--xds-port", "0", "--pods", "2", "--clients", "4", "--table",
         "--every-s", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "BALLAST_DB_PATH": str(tmp_path / "db.sqlite3")},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        served: dict[str, float] = {}
        deadline = time.monotonic() + 90
        lines: list[str] = []
        # Until Ballast's clients have reached both pods a few times over.
        while time.monotonic() < deadline and not (
            len(served) == 2 and all(rps > 0 for rps in served.values()) and len(lines) > 40
        ):
            line = process.stdout.readline()
            lines.append(line)
            if match := ROW.match(line):
                served[match[1]] = float(match[3])
        assert len(served) == 2, "".join(lines)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
    finally:
        process.kill()
        process.wait()
    summary = {m[1]: (int(m[2]), m[3]) for m in map(SUMMARY.match, rest.splitlines()) if m}
    assert set(summary) == {"L4", "Ballast"}, rest
    for calls, outcome in summary.values():
        assert calls > 0 and outcome == "all OK", rest


def test_it_names_the_codes_that_were_not_ok_and_their_share():
    assert group_summary({"OK": 990, "UNAVAILABLE": 8, "DEADLINE_EXCEEDED": 2}, 61.4) == (
        "1000 calls in 61 s, 1.0% not OK: UNAVAILABLE 8, DEADLINE_EXCEEDED 2"
    )
    assert group_summary({"OK": 5}, 1.0) == "5 calls in 1 s, all OK"
