"""bench/balance_quality.py's `retries` scenario runs end to end and reports both error rates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.timeout(300)
def test_it_reports_the_error_rate_without_and_with_retries_in_one_run():
    run = subprocess.run(
        [sys.executable, str(BENCH / "balance_quality.py"), "--smoke", "--only", "retries"],
        capture_output=True, text=True, timeout=280, cwd=BENCH,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])["retries"]
    assert report["retry_error_rate_with"] == 0.0
    # 30 % of the fifth pod's calls, no retry
    assert report["retry_error_rate_without"] > 0, report
    assert report["retries"] == report["retries_succeeded"] > 0
    assert report["calls_with"] > 100 and report["calls_without"] > 100
