"""`python -m balancer` as an operator runs it: a real process, real sockets, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest

from tests.support import backend as be
from tests.support.sockets import taken_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def env() -> dict[str, str]:
    """The test's environment without an admin token, so configs say what they need."""
    return {k: v for k, v in os.environ.items() if k != "BALLAST_ADMIN_TOKEN"}


def run_cli(*args: str, timeout_s: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "balancer", *args],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def write_config(tmp_path: Path, listener: str, endpoints: list[str]) -> Path:
    path = tmp_path / "ballast.toml"
    path.write_text(
        f'[balancer]\nshutdown_grace_s = 1\n\n[[listeners]]\naddress = "{listener}"\n\n'
        f'[[clusters]]\nname = "echo"\ndiscovery.endpoints = {json.dumps(endpoints)}\n',
        encoding="utf-8",
    )
    return path


def test_it_documents_every_flag_and_the_token_variable_in_help():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--config", "--check", "--ready-file", "--log-level"):
        assert flag in result.stdout
    assert "BALLAST_ADMIN_TOKEN" in result.stdout


def test_it_refuses_to_start_without_a_config():
    result = run_cli()
    assert result.returncode == 2
    assert "--config" in result.stderr


def test_it_exits_2_naming_the_key_of_a_bad_config(tmp_path):
    path = tmp_path / "ballast.toml"
    path.write_text('[[clusters]]\nname = "echo"\npolcy = "random"\n', encoding="utf-8")
    result = run_cli("--config", str(path), "--check")
    assert result.returncode == 2
    assert "bad config" in result.stderr
    assert "clusters[0].polcy" in result.stderr
    assert "did you mean 'policy'?" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_exits_2_for_a_missing_config_file(tmp_path):
    result = run_cli("--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "bad config" in result.stderr
    assert "nope.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_checks_a_valid_config_and_exits_0(tmp_path):
    path = write_config(tmp_path, "127.0.0.1:0", ["127.0.0.1:1"])
    result = run_cli("--config", str(path), "--check")
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "echo (round_robin)" in result.stdout


def _read_ready_file(path: Path) -> dict[str, object] | None:
    """The ready file's JSON, or None while the balancer has not written it yet."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


async def _wait_for_ready_file(path: Path, proc: asyncio.subprocess.Process) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_S
    while (ready := _read_ready_file(path)) is None:
        assert proc.returncode is None, "the balancer exited before it was ready"
        assert loop.time() < deadline, "no ready file in time"
        await asyncio.sleep(0.05)
    return ready


async def test_it_serves_calls_and_stops_cleanly_on_sigterm(tmp_path, backends):
    backend = await backends("pod-a")
    config = write_config(tmp_path, "127.0.0.1:0", [backend.address])
    ready_file = tmp_path / "ready.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "balancer", "--config", str(config),
        "--ready-file", str(ready_file), "--log-level", "WARNING",
        cwd=ROOT, env=env(), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        ready = await _wait_for_ready_file(ready_file, proc)
        (listener,) = ready["listeners"]  # type: ignore[misc]
        host, _, port = listener.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert ready["pid"] == proc.pid
        async with grpc.aio.insecure_channel(listener) as channel:
            call = channel.unary_unary(be.UNARY)(b"hello", timeout=10)
            assert await call == b"hello"
            assert dict(await call.initial_metadata())["x-backend"] == "pod-a"
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), STOP_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


def test_it_says_it_cannot_listen_on_a_port_already_in_use(tmp_path):
    with taken_port() as address:
        path = write_config(tmp_path, address, ["127.0.0.1:1"])
        result = run_cli("--config", str(path))  # the timeout fails the test if it hangs
    assert result.returncode == 1
    assert f"ballast: cannot start: cannot listen on {address}" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_says_platform_discovery_needs_the_demo_scene(tmp_path):
    path = tmp_path / "ballast.toml"
    path.write_text(
        '[[clusters]]\nname = "inventory"\ndiscovery = { kind = "platform", service = "inv" }\n',
        encoding="utf-8",
    )
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert "discovery kind 'platform' needs a platform" in result.stderr
    assert "Traceback" not in result.stderr


def _check_config(tmp_path: Path, text: str, **environ: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "ballast.toml"
    path.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "balancer", "--config", str(path), "--check"],
        cwd=ROOT, env={**env(), **environ}, capture_output=True, text=True,
        timeout=START_TIMEOUT_S,
    )  # fmt: skip


CLUSTER = '[[clusters]]\nname = "echo"\ndiscovery.endpoints = ["127.0.0.1:7001"]\n'
STRONG_TOKEN = "Zq3-xV9_pL2mN8rT"


def _nested_toml(depth: int) -> str:
    return CLUSTER + "[balancer]\nid = " + "[" * depth + "]" * depth + "\n"


@pytest.mark.parametrize(
    ("text", "environ", "fragment"),
    [
        pytest.param(
            "[balancer]\nmax_message_bytes = 2147483648\n" + CLUSTER, {},
            "balancer.max_message_bytes must be between 1 and 2147483647",
            id="max-message-bytes-past-2^31-1",
        ),
        pytest.param(
            "[balancer]\nshutdown_grace_s = nan\n" + CLUSTER, {},
            "balancer.shutdown_grace_s: expected a finite number, got nan", id="nan-grace",
        ),
        pytest.param(
            "[balancer]\nshutdown_grace_s = inf\n" + CLUSTER, {},
            "balancer.shutdown_grace_s: expected a finite number, got inf", id="inf-grace",
        ),
        pytest.param(
            CLUSTER + "drain_timeout_s = -inf\n", {},
            "clusters[0].drain_timeout_s: expected a finite number, got -inf", id="inf-drain",
        ),
        pytest.param(
            CLUSTER + "health_check = { enabled = true, interval_s = nan }\n", {},
            "clusters[0].health_check.interval_s: expected a finite number", id="nan-interval",
        ),
        pytest.param(
            '[[listeners]]\naddress = "::1:443"\n' + CLUSTER, {},
            "an IPv6 address needs brackets: write [::1]:443", id="ipv6-without-brackets",
        ),
        pytest.param(
            CLUSTER.replace('"127.0.0.1:7001"', '"fe80::1:7001"'), {},
            "write [fe80::1]:7001", id="ipv6-endpoint-without-brackets",
        ),
        pytest.param(
            _nested_toml(5000), {}, "not valid TOML: nested too deeply", id="deeply-nested-toml",
        ),
        pytest.param(
            CLUSTER + '[admin]\ntoken = "                    "\n', {},
            "admin.token: the admin token is blank", id="whitespace-token-in-file",
        ),
        pytest.param(
            CLUSTER + "[admin]\n", {"BALLAST_ADMIN_TOKEN": " \t  "},
            "BALLAST_ADMIN_TOKEN (admin.token_env): the admin token is blank",
            id="whitespace-token-in-env",
        ),
        pytest.param(
            CLUSTER + "[admin]\n", {"BALLAST_ADMIN_TOKEN": "a" * 32},
            "BALLAST_ADMIN_TOKEN (admin.token_env): the admin token is trivially weak",
            id="repeated-character-token",
        ),
        pytest.param(
            CLUSTER + '[admin]\ntoken_env = "MY_TOKEN"\n', {"MY_TOKEN": "Zq3-xV9_pL"},
            "MY_TOKEN (admin.token_env): the admin token is too short (10 characters)",
            id="short-token",
        ),
        pytest.param(
            '[[clusters]]\nname = "inv"\ndiscovery = { kind = "platform", service = "inv" }\n',
            {}, "discovery kind 'platform' needs a platform", id="platform-discovery",
        ),
    ],
)  # fmt: skip
def test_it_check_refuses_what_start_would_refuse_in_one_line(tmp_path, text, environ, fragment):
    result = _check_config(tmp_path, text, **environ)
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("ballast: bad config: ")
    assert fragment in line


def test_it_check_accepts_a_strong_token_and_bracketed_ipv6(tmp_path):
    text = '[[listeners]]\naddress = "[::1]:0"\n' + CLUSTER + "[admin]\n"
    result = _check_config(tmp_path, text, BALLAST_ADMIN_TOKEN=STRONG_TOKEN)
    assert result.returncode == 0, result.stderr
