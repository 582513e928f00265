"""A configuration mistake is one line naming the variable, and a non-zero exit: in a
fresh process, as an operator starts `manage.py` and `python -m dashboard`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEV = {"BALLAST_DEV": "1"}


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BALLAST_", "SECRET_KEY", "DJANGO_", "REDIS_", "DATABASE_"))
    }
    base["BALLAST_DB_PATH"] = ":memory:"
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**base, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("REDIS_URL", "redis://[bad", "REDIS_URL: not a URL"),
        ("REDIS_URL", "http://redis:6379", "REDIS_URL: scheme 'http' is not one of"),
        ("REDIS_URL", "redis://redis:port/0", "REDIS_URL: not a URL"),
        ("DATABASE_URL", "mysql2://u:secret@db/ballast", "DATABASE_URL: scheme 'mysql2'"),
        ("DATABASE_URL", "postgres://u:p@db:notaport/x", "DATABASE_URL: "),
        ("BALLAST_BALANCERS", "b0", "BALLAST_BALANCERS: item 'b0' is not key=value"),
        ("BALLAST_BALANCERS", "b0=balancer", "BALLAST_BALANCERS: b0='balancer': not host:port"),
        ("BALLAST_BALANCERS", "b0=h:99999", "port '99999' is not a number from 1 to 65535"),
        ("BALLAST_BALANCERS", "b0=::1:9901", "an IPv6 address needs brackets"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(name: str, value: str, says: str) -> None:
    line = one_line_error(run("manage.py", "check", **DEV, **{name: value}))
    assert line.startswith("manage.py: ")
    assert says in line
    assert "secret" not in line  # a URL's password is never echoed


def test_good_addresses_pass() -> None:
    result = run("manage.py", "check", **DEV, BALLAST_BALANCERS="b0=127.0.0.1:9901,b1=[::1]:9902")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", [["check"], ["migrate"], ["apitoken", "list"], ["help"]])
def test_manage_py_without_a_secret_key_is_one_line(command: list[str]) -> None:
    line = one_line_error(run("manage.py", *command))
    assert line.startswith("manage.py: SECRET_KEY is not set: set SECRET_KEY or SECRET_KEY_FILE")


def test_python_m_dashboard_without_a_secret_key_is_one_line() -> None:
    line = one_line_error(run("-m", "dashboard", "--port", "0"))
    assert line.startswith("dashboard: SECRET_KEY is not set")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_unreachable_redis_at_start_is_one_line(tmp_path: Path) -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/0"
    result = run(
        "-m", "dashboard", "--port", "0", **DEV, REDIS_URL=url, BALLAST_SERVICES="inventory",
        BALLAST_DB_PATH=str(tmp_path / "db.sqlite3"),
    )  # fmt: skip
    line = one_line_error(result)
    assert result.returncode == 1
    assert line.startswith(f"dashboard: Redis at redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}")
    assert "(REDIS_URL) is unreachable" in line
    assert "Start it, fix REDIS_URL" in line
    assert "hunter2" not in result.stderr + result.stdout


def test_runcollector_with_an_unreachable_redis_is_one_line() -> None:
    result = run(
        "manage.py", "runcollector", **DEV, REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0",
        BALLAST_BALANCERS="b0=127.0.0.1:9", BALLAST_SERVICES="inventory",
        BALLAST_ADMIN_TOKEN="a-long-enough-admin-token-for-the-check-0123",
    )  # fmt: skip
    line = one_line_error(result)
    assert line.startswith("CommandError: Redis at redis://127.0.0.1:")
    assert "(REDIS_URL) is unreachable" in line
