"""bench/oom_predict.py refuses a bad leak in one line, before starting anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "bench" / "oom_predict.py"


def test_it_refuses_a_leak_that_is_not_positive() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--leak-bytes", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("--leak-bytes must be positive, got 0")
    assert done.stdout == ""
