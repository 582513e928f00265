"""`make demo` runs `python -m balancer.demo`: it must start, serve traffic and stop cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time


def test_it_starts_serves_load_and_stops_on_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-m", "balancer.demo", "--port", "0", "--admin-port", "0",
         "--every-s", "0.3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if re.match(r"echo-\d\s+READY\s+100\s+[1-9]", line):
                break
        else:
            raise AssertionError("no endpoint served a request:\n" + "".join(lines))
        assert any("admin API:" in line and "Bearer" in line for line in lines)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
        process.wait()
