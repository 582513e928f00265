"""A replica with `[control_plane]` holds the dashboard's desired state before it serves:
the config table, fetching (retries, a bounded wait, refused tokens, wrong answers),
applying, and the ready file of a real `python -m balancer` process."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc.aio
import pytest

from balancer.config import ConfigError, ControlPlaneConfig, config_from_dict
from balancer.controlplane import BadAnswer, parse_desired_state
from balancer.endpoint import State
from balancer.server import Balancer
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN
from tests.support.desired_state import (
    CONTROL_TOKEN,
    Answer,
    BalancerProcess,
    DesiredStateServer,
    balancer_toml,
    desired,
    endpoint,
    self_signed,
)
from tests.support.inventory import dead_port
from tests.support.waiting import wait_for
from tests.test_cli import run_cli

SERVICE = "inventory"
PODS = ("pod-a", "pod-b", "pod-c")
# pod-a weighs more, pod-b is drained (with a timeout), an endpoint and a service this
# replica does not have are skipped, and the policy changes.
STATE = desired([
    {"name": SERVICE, "policy": "random", "endpoints": [
        endpoint("pod-a", weight=250),
        endpoint("pod-b", drained=True, drain_timeout_s=3.0),
        endpoint("pod-z", drained=True),
    ]},
    {"name": "payments", "policy": "peak_ewma", "endpoints": [endpoint("pay-0", weight=5)]},
])  # fmt: skip


# --- the config table ---------------------------------------------------------------------


def _config(table: dict[str, Any] | None, environ: dict[str, str] | None = None) -> Any:
    data: dict[str, Any] = {"clusters": [{"name": SERVICE}]}
    if table is not None:
        data["control_plane"] = table
    return config_from_dict(data, environ or {})


def test_it_has_no_control_plane_without_the_table() -> None:
    assert _config(None).control_plane is None


def test_it_reads_the_table_with_envoys_default_wait_and_the_token_from_the_environment() -> None:
    config = _config({"url": "http://dash:8000"}, {"BALLAST_CONTROL_TOKEN": "t0k"})
    assert config.control_plane == ControlPlaneConfig(
        url="http://dash:8000", token="t0k", initial_fetch_timeout_s=15.0
    )


def test_it_takes_the_token_from_the_variable_named_by_token_env_or_the_file() -> None:
    table = {"url": "https://dash", "token_env": "MY_TOKEN"}
    assert _config(table, {"MY_TOKEN": "abc"}).control_plane.token == "abc"
    assert _config({**table, "token": "inline"}, {"MY_TOKEN": "abc"}).control_plane.token == (
        "inline"
    )


@pytest.fixture
def ca_file(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "not-a-ca.pem"
    path.write_text("hello\n", encoding="utf-8")
    yield str(path)


@pytest.mark.parametrize(
    ("table", "fragments"),
    [
        ({"token": "t"}, ["control_plane: url ''", "http(s)://host"]),
        ({"url": "ftp://dash", "token": "t"}, ["url 'ftp://dash'", "http(s)://host"]),
        ({"url": "http://dash/?x=1", "token": "t"}, ["without ?query"]),
        ({"url": "http://dash"}, ["needs an API token", "BALLAST_CONTROL_TOKEN", "apitoken"]),
        ({"url": "http://dash", "token": "  "}, ["needs an API token"]),
        ({"url": "http://d", "token": "t", "initial_fetch_timeout_s": 0}, ["fetch_timeout_s"]),
        ({"url": "http://d", "token": "t", "initial_fetch_timeout_s": float("nan")}, ["finite"]),
        ({"url": "http://d", "token": "t", "initial_fetch_timeout_s": "15"}, ["expected a number"]),
        ({"url": "http://d", "token": "t", "ca_file": "/x.pem"}, ["ca_file is for an https url"]),
        ({"url": "https://d", "token": "t", "ca_file": "/nope.pem"}, ["'/nope.pem': no such file"]),
        ({"url": "https://d", "token": "t", "initial_fetch_timout_s": 1}, ["did you mean"]),
    ],
)  # fmt: skip
def test_it_names_the_key_and_the_problem(table: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        _config(table)
    message = str(err.value)
    assert message.startswith("control_plane")
    for fragment in fragments:
        assert fragment in message


def test_it_refuses_a_ca_file_that_is_not_a_ca_bundle(ca_file: str) -> None:
    with pytest.raises(ConfigError, match="not a PEM CA bundle"):
        _config({"url": "https://dash", "token": "t", "ca_file": ca_file})


def test_check_catches_a_bad_control_plane(tmp_path: Path) -> None:
    path = tmp_path / "ballast.toml"
    toml = balancer_toml([("pod-a", "127.0.0.1:1")], control_plane={"url": "dash:8000"})
    path.write_text(toml, encoding="utf-8")
    result = run_cli("--config", str(path), "--check")
    assert result.returncode == 2
    assert "control_plane: url 'dash:8000' is not the dashboard's base URL" in result.stderr
    assert "Traceback" not in result.stderr


# --- the answer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"<html>login</html>", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"services": {}}', "services: expected a list"),
        (b'{"services": [{"name": 3, "policy": null, "endpoints": []}]}', "services[0].name"),
        (b'{"services": [{"name": "s", "endpoints": []}]}', "services[0].policy: expected str"),
        (b'{"services": [{"name": "s", "policy": null, "endpoints": [{"endpoint_id": "p",'
         b' "weight": true, "drained": false, "drain_timeout_s": null}]}]}',
         "services[0].endpoints[0].weight"),
        (b'{"services": [{"name": "s", "policy": null, "endpoints": [{"endpoint_id": "p",'
         b' "weight": 1, "drained": true, "drain_timeout_s": NaN}]}]}', "drain_timeout_s"),
        (b"[" * 100_000, "not JSON"),
    ],
)  # fmt: skip
def test_it_names_what_is_wrong_with_an_answer(raw: bytes, fragment: str) -> None:
    with pytest.raises(BadAnswer) as err:
        parse_desired_state(raw)
    assert fragment in str(err.value)


# --- an in-process replica ----------------------------------------------------------------


@pytest.fixture
async def pods(backends: Callable[..., Awaitable[Backend]]) -> dict[str, Backend]:
    return {name: await backends(name) for name in PODS}


@pytest.fixture
def control() -> Iterator[Callable[..., DesiredStateServer]]:
    started: list[DesiredStateServer] = []

    def start(
        *answers: Answer, hold: bool = False, tls: tuple[Path, Path] | None = None
    ) -> DesiredStateServer:
        server = DesiredStateServer(list(answers), hold=hold, tls=tls).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _replica(
    pods: dict[str, Backend], url: str, timeout_s: float = 15.0, **control: Any
) -> Balancer:
    endpoints = [{"address": b.address, "name": n} for n, b in pods.items()]
    config = config_from_dict(
        {
            "listeners": [{"address": "127.0.0.1:0"}],
            "clusters": [{"name": SERVICE, "discover_unary_methods": False,
                          "discovery": {"endpoints": endpoints}}],
            "control_plane": {"url": url, "initial_fetch_timeout_s": timeout_s, **control},
            "admin": {"address": "127.0.0.1:0", "token": ADMIN_TOKEN},
        },
        {"BALLAST_CONTROL_TOKEN": CONTROL_TOKEN},
    )  # fmt: skip
    return Balancer(config)


async def test_it_applies_the_fetched_state_to_the_endpoints_it_knows(
    pods: dict[str, Backend], control: Callable[..., DesiredStateServer]
) -> None:
    server = control(STATE)
    balancer = _replica(pods, server.url)
    await balancer.start()
    try:
        cluster = balancer.clusters[SERVICE]
        states = {i: (ep.state, ep.weight) for i, ep in cluster.endpoints.items()}
        assert states == {
            "pod-a": (State.READY, 250), "pod-b": (State.DRAINED, 100),
            "pod-c": (State.READY, 100),
        }  # fmt: skip
        assert cluster.policy == "random"
        assert server.requests == [f"Token {CONTROL_TOKEN}"]
    finally:
        await balancer.stop(grace_s=0)


async def test_nothing_serves_while_the_desired_state_is_on_its_way(
    pods: dict[str, Backend], control: Callable[..., DesiredStateServer]
) -> None:
    server = control(STATE, hold=True)
    balancer = _replica(pods, server.url)
    starting = asyncio.create_task(balancer.start())
    try:
        await wait_for(lambda: server.requests, timeout_s=30, what="the fetch")
        assert not starting.done()
        assert balancer.admin_address is None  # no admin API, so no health SERVING yet
        server.release()
        await starting
        assert balancer.admin_address is not None
        assert balancer.clusters[SERVICE].endpoints["pod-b"].state is State.DRAINED
    finally:
        server.release()
        await asyncio.gather(starting, return_exceptions=True)
        await balancer.stop(grace_s=0)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_it_fetches_over_https_checked_against_ca_file(
    tmp_path: Path,
    pods: dict[str, Backend],
    control: Callable[..., DesiredStateServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = self_signed(tmp_path)
    server = control(STATE, tls=(cert, key))
    trusting = _replica(pods, server.url, ca_file=str(cert))
    await trusting.start()
    try:
        assert trusting.clusters[SERVICE].endpoints["pod-b"].state is State.DRAINED
    finally:
        await trusting.stop(grace_s=0)
    untrusting = _replica(pods, server.url)  # the system's CAs: not this certificate
    await untrusting.start()
    try:
        [line] = _control_plane_lines(caplog)
        assert "certificate is not trusted" in line and "control_plane.ca_file" in line
        assert untrusting.clusters[SERVICE].endpoints["pod-b"].state is State.READY
        assert len(server.requests) == 1  # retrying cannot help
    finally:
        await untrusting.stop(grace_s=0)


async def test_it_retries_until_the_control_plane_answers(
    pods: dict[str, Backend], control: Callable[..., DesiredStateServer]
) -> None:
    unavailable = Answer(503, b'{"detail": "starting"}')
    server = control(unavailable, unavailable, STATE)
    balancer = _replica(pods, server.url)
    await balancer.start()
    try:
        assert balancer.clusters[SERVICE].endpoints["pod-b"].state is State.DRAINED
        assert len(server.requests) == 3
    finally:
        await balancer.stop(grace_s=0)


def _control_plane_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records
        if r.name == "balancer.controlplane" and r.levelno >= logging.WARNING
    ]  # fmt: skip


async def test_it_serves_the_config_files_state_when_the_control_plane_is_unreachable(
    pods: dict[str, Backend], caplog: pytest.LogCaptureFixture
) -> None:
    with dead_port() as port:
        url = f"http://127.0.0.1:{port}"
        balancer = _replica(pods, url, timeout_s=1.0)
        await balancer.start()
    try:
        [line] = _control_plane_lines(caplog)
        assert f"control plane {url}/api/v1/desired-state/: no desired state after 1 s" in line
        assert "Connection refused" in line
        assert "serving the config file's state" in line
        assert "reconciler will correct it" in line
        cluster = balancer.clusters[SERVICE]
        assert {ep.state for ep in cluster.endpoints.values()} == {State.READY}
    finally:
        await balancer.stop(grace_s=0)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_refused_token_is_one_clear_line_and_no_more_tries(
    status: int,
    pods: dict[str, Backend],
    control: Callable[..., DesiredStateServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = control(Answer(status, b'{"detail": "Invalid token."}'))
    balancer = _replica(pods, server.url)
    await balancer.start()
    try:
        [line] = _control_plane_lines(caplog)
        assert f"HTTP {status}" in line
        assert "the token was refused; set BALLAST_CONTROL_TOKEN" in line
        assert "serving the config file's state" in line
        assert len(server.requests) == 1
    finally:
        await balancer.stop(grace_s=0)


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (Answer(302, b"", (("Location", "http://elsewhere/login/"),)),
         "HTTP 302 Found to http://elsewhere/login/: set control_plane.url"),
        (Answer(404, b"{}"), "HTTP 404 Not Found: is control_plane.url the dashboard's base URL?"),
        (Answer(400, b"{}"), "HTTP 400 Bad Request"),
    ],
)  # fmt: skip
async def test_an_answer_that_trying_again_cannot_change_is_one_line_and_one_try(
    answer: Answer,
    fragment: str,
    pods: dict[str, Backend],
    control: Callable[..., DesiredStateServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = control(answer)
    balancer = _replica(pods, server.url)
    await balancer.start()
    try:
        [line] = _control_plane_lines(caplog)
        assert fragment in line
        assert len(server.requests) == 1
    finally:
        await balancer.stop(grace_s=0)


async def test_a_url_that_is_not_the_dashboard_is_one_clear_line(
    pods: dict[str, Backend],
    control: Callable[..., DesiredStateServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = control(Answer(200, b"<html>a login page</html>"))
    balancer = _replica(pods, server.url)
    await balancer.start()
    try:
        [line] = _control_plane_lines(caplog)
        assert "not a desired state (the answer is not JSON)" in line
        assert "is control_plane.url the dashboard's base URL?" in line
    finally:
        await balancer.stop(grace_s=0)


# --- a real process -----------------------------------------------------------------------


def _toml(pods: dict[str, Backend], url: str, timeout_s: float = 15.0) -> str:
    endpoints = [(n, b.address) for n, b in pods.items()]
    return balancer_toml(
        endpoints, control_plane={"url": url, "initial_fetch_timeout_s": timeout_s}
    )


async def _calls(listener: str, count: int) -> None:
    async with grpc.aio.insecure_channel(listener) as channel:
        unary = channel.unary_unary(be.UNARY)
        for _ in range(count):
            await unary(b"ping", timeout=10)


def _env() -> dict[str, str]:
    return {"BALLAST_CONTROL_TOKEN": CONTROL_TOKEN}


async def test_the_ready_file_appears_only_once_the_desired_state_is_held(
    tmp_path: Path, pods: dict[str, Backend], control: Callable[..., DesiredStateServer]
) -> None:
    server = control(STATE, hold=True)
    replica = BalancerProcess(tmp_path, _toml(pods, server.url), _env()).start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not server.requests:  # the balancer asked; its answer is held back
            assert replica.proc is not None and replica.proc.poll() is None, replica.stderr()
            assert loop.time() < deadline, replica.stderr()
            await asyncio.sleep(0.02)
        assert replica.ready() is None
        server.release()
        ready = await replica.wait_ready()
        await _calls(ready["listeners"][0], 60)
        assert pods["pod-b"].calls == 0
        assert pods["pod-a"].calls > 0 and pods["pod-c"].calls > 0
        assert "desired state from" in replica.stderr()
    finally:
        assert replica.stop() == 0, replica.stderr()
    assert "Traceback" not in replica.stderr()


async def test_a_process_that_cannot_reach_the_control_plane_says_so_once_and_starts(
    tmp_path: Path, pods: dict[str, Backend]
) -> None:
    with dead_port() as port:
        url = f"http://127.0.0.1:{port}"
        replica = BalancerProcess(tmp_path, _toml(pods, url, timeout_s=1.0), _env()).start()
        try:
            ready = await replica.wait_ready()
            await _calls(ready["listeners"][0], 30)
        finally:
            assert replica.stop() == 0, replica.stderr()
    lines = [line for line in replica.stderr().splitlines() if "control plane" in line]
    assert len(lines) == 1, replica.stderr()
    assert "WARNING" in lines[0] and url in lines[0] and "Connection refused" in lines[0]
    assert all(p.calls > 0 for p in pods.values())
    assert "Traceback" not in replica.stderr()


async def test_a_process_with_a_bad_token_says_so_once_and_starts(
    tmp_path: Path, pods: dict[str, Backend], control: Callable[..., DesiredStateServer]
) -> None:
    server = control(Answer(401, b'{"detail": "Invalid token."}'))
    replica = BalancerProcess(tmp_path, _toml(pods, server.url), _env()).start()
    try:
        await replica.wait_ready()
    finally:
        assert replica.stop() == 0, replica.stderr()
    lines = [line for line in replica.stderr().splitlines() if "control plane" in line]
    assert len(lines) == 1, replica.stderr()
    assert "HTTP 401 Unauthorized: the token was refused" in lines[0]
    assert "Traceback" not in replica.stderr()


def test_check_says_where_the_desired_state_comes_from(tmp_path: Path) -> None:
    path = tmp_path / "ballast.toml"
    control = {"url": "https://dash.example:8443", "token": "t0k", "initial_fetch_timeout_s": 5}
    path.write_text(balancer_toml([("pod-a", "127.0.0.1:1")], control_plane=control), "utf-8")
    result = run_cli("--config", str(path), "--check")
    assert result.returncode == 0, result.stderr
    assert "desired state from https://dash.example:8443 before serving (waits up to 5 s)" in (
        result.stdout
    )
