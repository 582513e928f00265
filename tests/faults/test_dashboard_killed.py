"""The dashboard killed in the middle of a restart, with real processes: `python -m demo`
(pods, Ballast, clients and the dashboard with its control plane, as `make demo` runs
it) on a database kept between runs; a long stream holds the restarted pod in its drain.

kill -9: the next start finds the operation orphaned, finishes it as failed with the
step it stopped at, drops the drain, and restarts of the service work again.
SIGTERM: the stopping process ends the operation itself and says what happened.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from tests.support.demo_process import DemoProcess, api_token, call, start_demo
from tests.support.held_stream import held_stream

# Two starts of the demo (pods as processes) and a restart, on a machine that may be busy.
pytestmark = pytest.mark.timeout(300)

SERVICE = "inventory"
SLOW_S = 90.0


async def _poll(what: str, check: Any, timeout_s: float = SLOW_S) -> Any:
    """Calls `check()` (blocking, in a thread) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(check)
        if found:
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _operation(demo: DemoProcess, token: str, operation_id: int) -> dict[str, Any]:
    status, body = call("GET", f"{demo.url}/api/v1/operations/{operation_id}/", token)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


def _pods(demo: DemoProcess, token: str) -> list[dict[str, Any]]:
    status, body = call("GET", f"{demo.url}/api/v1/services/{SERVICE}/pods/", token)
    return list(body) if status == 200 else []


def _pod_state(demo: DemoProcess, token: str, pod: str) -> str | None:
    return next((p["state"] for p in _pods(demo, token) if p["pod"] == pod), None)


async def _restart_mid_drain(demo: DemoProcess, token: str, pod: str) -> int:
    """Starts a restart of `pod` (held by a stream) and returns once it is draining."""
    url = f"{demo.url}/api/v1/services/{SERVICE}/pods/{pod}/restart"
    await _poll(f"{pod} in a frame", lambda: _pod_state(demo, token, pod) == "READY")
    status, body = await asyncio.to_thread(call, "POST", url, token)
    assert status == 202, body
    operation_id = int(body["id"])
    await _poll("the restart draining", lambda: _pod_state(demo, token, pod) == "DRAINING")
    assert _operation(demo, token, operation_id)["step"] == "draining"
    return operation_id


def _errors(codes: Counter[str]) -> int:
    return sum(n for code, n in codes.items() if code != "OK")


async def test_a_dashboard_killed_mid_drain_is_recovered_on_its_next_start(
    tmp_path: Path,
) -> None:
    first = start_demo(tmp_path)
    try:
        token = api_token(tmp_path)
        async with held_stream(first.ballast) as held:
            operation_id = await _restart_mid_drain(first, token, held.pod)
            children = psutil.Process(first.process.pid).children(recursive=True)
            first.stop(signal.SIGKILL)
            # The stream went with the balancer in the killed process: the one call lost.
            assert await asyncio.wait_for(held.ended(), 30) == grpc.StatusCode.UNAVAILABLE
    finally:
        first.stop(signal.SIGKILL)
    # Nothing it started outlives it: pods and the proxyless clients die with it.
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.cmdline() for p in alive]

    started = time.monotonic()
    second = start_demo(tmp_path)
    serving = time.monotonic()
    try:
        finished = await _poll(
            "the orphan finished",
            lambda: (op := _operation(second, token, operation_id))["running"] is False and op,
        )
        recovery_s, after_banner_s = time.monotonic() - started, time.monotonic() - serving
        pods = await _poll(
            "the new pods READY behind Ballast",
            lambda: (
                (got := _pods(second, token)) and all(p["state"] == "READY" for p in got) and got
            ),
        )
        url = f"{second.url}/api/v1/services/{SERVICE}/pods/{pods[0]['pod']}/restart"
        status, again = await asyncio.to_thread(call, "POST", url, token)
        assert status == 202, again
        done = await _poll(
            "the new restart done",
            lambda: (op := _operation(second, token, again["id"]))["running"] is False and op,
        )
    finally:
        second.stop(signal.SIGINT)

    assert finished["step"] == "failed"
    assert finished["detail"].startswith(
        "orphaned: the dashboard process running it stopped during step draining;"
        f" pod {held.pod} undrained"
    )
    assert all(p["desired"] is None for p in pods), pods  # no drain left behind
    assert done["step"] == "done", done
    codes = second.client_codes()
    assert codes["OK"] > 0 and _errors(codes) == 0, codes
    print(
        f"\nkill -9 mid drain: the orphan finished {recovery_s:.1f} s after the demo was"
        f" started again ({after_banner_s:.1f} s after it served); clients of the second"
        f" run {dict(codes)}; one held stream lost with the killed process"
    )


async def test_a_dashboard_stopped_mid_drain_ends_its_restart_and_says_why(
    tmp_path: Path,
) -> None:
    demo = start_demo(tmp_path)
    try:
        token = api_token(tmp_path)
        async with held_stream(demo.ballast) as held:
            operation_id = await _restart_mid_drain(demo, token, held.pod)
            code = await asyncio.to_thread(demo.stop, signal.SIGTERM)
            stream_code = await asyncio.wait_for(held.ended(), 30)
    finally:
        demo.stop(signal.SIGKILL)

    assert code == 0, demo.output
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        step, detail = db.execute(
            "SELECT step, detail FROM control_operation WHERE id = ?", (operation_id,)
        ).fetchone()
        undrain = db.execute(
            "SELECT actor, source, result FROM control_auditevent"
            " WHERE action = 'undrain' AND target = ? ORDER BY id DESC",
            (held.pod,),
        ).fetchone()
    assert (step, detail) == (
        "failed",
        f"the dashboard process running it stopped during step draining; pod {held.pod} undrained",
    )
    assert undrain == ("ballast", "system", "ok")  # the balancer took the undrain
    assert "no balancer replica is configured" not in demo.output
    codes = demo.client_codes()
    assert codes["OK"] > 0 and _errors(codes) == 0, codes
    print(
        f"\nSIGTERM mid drain: clients {dict(codes)}; the held stream ended"
        f" {stream_code.name} when the balancer stopped"
    )
