"""The settings module and the checks in a fresh process, as `manage.py` runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    for name in ("SECRET_KEY", "SECRET_KEY_FILE", "DEBUG", "BALLAST_DEV", "REDIS_URL"):
        base.pop(name, None)
    base["BALLAST_DB_PATH"] = ":memory:"
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_refuses_to_start_without_a_secret_key() -> None:
    result = run("manage.py", "check")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_it_starts_with_a_throwaway_key_in_dev() -> None:
    result = run("manage.py", "check", BALLAST_DEV="1")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_it_fails_the_check_for_several_processes_in_memory() -> None:
    result = run("manage.py", "check", BALLAST_DEV="1", BALLAST_DASHBOARD_PROCESSES="2")
    assert result.returncode != 0
    assert "ballast.E001" in result.stderr


def test_it_names_a_bad_variable_at_start() -> None:
    result = run("manage.py", "check", BALLAST_DEV="1", BALLAST_DASHBOARD_PROCESSES="many")
    assert result.returncode != 0
    assert "BALLAST_DASHBOARD_PROCESSES='many': not an integer" in result.stderr
