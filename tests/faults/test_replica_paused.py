"""A balancer replica paused (SIGSTOP) across an undrain, a clear and a few more acts:
once resumed it converges on the desired state, and says it has only then.

Real parts throughout: two `python -m balancer` processes in front of two real
backends, the dashboard's control plane (collector and reconciler, as `python -m
dashboard` runs them) in the test, the acts through `dashboard.control.actions` as
the API calls them, clients calling through both replicas all along.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from asgiref.sync import sync_to_async
from django.test import override_settings

from dashboard.app.collecting import ControlPlane, collector_config
from dashboard.collector.rates import state_name
from dashboard.control import actions
from dashboard.control.api import observed
from dashboard.control.desired import endpoint_view
from dashboard.control.models import AuditEvent
from tests.support import backend as be
from tests.support.backend import Backend
from tests.support.balancing import ADMIN_TOKEN
from tests.support.replicas import ReplicaProcess, replicas
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

SERVICE = "inventory"
OPERATOR = actions.Actor("operator", AuditEvent.Source.API)
CALL_TIMEOUT_S = 1.0
RESUMED_CALLS = 200


@pytest.fixture(autouse=True)
def _fresh(fresh_dashboard_state: None) -> None:
    """Each test starts with a fresh channel layer and page history."""


@dataclass
class Caller:
    """Calls through one replica without pause; counts per pod what got through."""

    replica: ReplicaProcess
    pods: dict[str, int] = field(default_factory=dict)
    failed: int = 0

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.replica.listener) as channel:
            call = channel.unary_unary(be.UNARY)
            while True:
                try:
                    answer = call(b"ping", timeout=CALL_TIMEOUT_S)
                    await answer
                    pod = dict(await answer.initial_metadata())["x-backend"]
                    self.pods[str(pod)] = self.pods.get(str(pod), 0) + 1
                except grpc.aio.AioRpcError:
                    self.failed += 1  # the paused replica answers nothing
                await asyncio.sleep(0.005)


@dataclass
class Sample:
    """What the control plane said of the paused replica at one moment."""

    at: float
    up: bool
    converged: bool | None
    state: str | None  # pod-a on the replica, from the snapshot the collector holds
    weight: int | None


def _sample(plane: ControlPlane, replica_id: str) -> Sample:
    frame = next(r for r in plane.collector.replica_frames() if r["id"] == replica_id)
    pod = endpoint_view(plane.collector.snapshots()[replica_id], SERVICE).get("pod-a")
    return Sample(
        time.monotonic(),
        frame["up"],
        frame.get("converged"),
        state_name(pod.state) if pod is not None else None,
        pod.weight if pod is not None else None,
    )


@contextlib.asynccontextmanager
async def sampling(plane: ControlPlane, replica_id: str) -> AsyncIterator[list[Sample]]:
    """Samples what the control plane says of the replica every 20 ms while the block runs."""
    samples: list[Sample] = []

    async def sample_forever() -> None:
        while True:
            samples.append(_sample(plane, replica_id))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(sample_forever())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def control_plane(processes: dict[str, ReplicaProcess]) -> AsyncIterator[ControlPlane]:
    """The collector and reconciler as the dashboard runs them, over the replicas."""
    with override_settings(BALLAST_SERVICES=[SERVICE], BALLAST_COLLECTOR_INTERVAL_MS=250):
        config = collector_config({r.id: r.admin for r in processes.values()}, ADMIN_TOKEN)
        plane = ControlPlane(config)
        await plane.start()
        try:
            yield plane
        finally:
            await plane.stop()


@contextlib.asynccontextmanager
async def calling(*callers: Caller) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c.run()) for c in callers]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _replica_api(replica_id: str) -> dict[str, Any]:
    """The replica as `/api/v1/replicas/` shows it (and the overview)."""
    return next(r for r in observed.replicas() if r["id"] == replica_id)


def _ready_in_frame() -> bool:
    """The newest frame has both pods READY: the actions find them there."""
    frame = actions.latest_frame(SERVICE) or {}
    return sorted(p["pod"] for p in frame.get("pods", []) if p.get("state") == "READY") == [
        "pod-a", "pod-b",
    ]  # fmt: skip


def _holds(plane: ControlPlane, replica_id: str, state: str, weight: int) -> bool:
    s = _sample(plane, replica_id)
    return s.state == state and s.weight == weight


async def _calls_per_pod(replica: ReplicaProcess, count: int) -> dict[str, int]:
    """Sends `count` calls through the replica; how many each pod served."""
    served = {"pod-a": 0, "pod-b": 0}
    async with grpc.aio.insecure_channel(replica.listener) as channel:
        call = channel.unary_unary(be.UNARY)
        for _ in range(count):
            answer = call(b"ping", timeout=5)
            await answer
            served[str(dict(await answer.initial_metadata())["x-backend"])] += 1
    return served


async def _wait_settled(ids: list[int], timeout_s: float = 30.0) -> list[AuditEvent]:
    """The audit events once none is pending any more (or as they are at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = [e async for e in AuditEvent.objects.filter(pk__in=ids).order_by("id")]
        if all(e.result != "pending" for e in events) or time.monotonic() > deadline:
            return events
        await asyncio.sleep(0.1)


async def _act(name: str, *args: Any) -> actions.Outcome:
    outcome: actions.Outcome = await sync_to_async(getattr(actions, name))(OPERATOR, *args)
    return outcome


async def test_a_replica_paused_across_an_undrain_and_a_clear_converges_and_says_so_only_then(
    tmp_path: Path, backends: Callable[..., Awaitable[Backend]]
) -> None:
    pods = [await backends("pod-a"), await backends("pod-b")]
    async with (
        replicas(tmp_path, ["b0", "b1"], SERVICE, pods) as processes,
        control_plane(processes) as plane,
    ):
        live, paused = Caller(processes["b0"]), Caller(processes["b1"])
        await wait_for(
            lambda: all(r["converged"] for r in plane.collector.replica_frames())
            and _ready_in_frame(),
            timeout_s=30, what="both replicas up and converged",
        )  # fmt: skip
        async with calling(live, paused):
            # Both replicas take the drain and the weight while they run.
            await _act("drain", SERVICE, "pod-a")
            await _act("set_weight", SERVICE, "pod-a", 300)
            await wait_for(
                lambda: all(_holds(plane, r, "DRAINED", 300) for r in ("b0", "b1")),
                what="pod-a drained at weight 300 on both replicas",
            )
            before = (live.pods.get("pod-a", 0), paused.pods.get("pod-a", 0))
            total_before = sum(live.pods.values()) + sum(paused.pods.values())
            await asyncio.sleep(1.0)  # calls go on through both replicas, none to pod-a
            drained_calls = (
                live.pods.get("pod-a", 0) - before[0],
                paused.pods.get("pod-a", 0) - before[1],
            )
            drained_window_calls = (
                sum(live.pods.values()) + sum(paused.pods.values()) - total_before
            )

            async with sampling(plane, "b1") as samples:
                processes["b1"].pause()
                # Missed by b1: the undrain and the clear of pod-a; pod-b drained and
                # undrained, weighted and cleared.
                act_started = time.monotonic()
                events = [await _act("undrain", SERVICE, "pod-a")]
                # The undrain's push to b1 timed out: from here on b1 is known to lack it.
                acted_at = time.monotonic()
                events += [
                    await _act("clear_endpoint", SERVICE, "pod-a"),
                    await _act("drain", SERVICE, "pod-b"),
                    await _act("undrain", SERVICE, "pod-b"),
                    await _act("set_weight", SERVICE, "pod-b", 50),
                    await _act("clear_endpoint", SERVICE, "pod-b"),
                ]
                for outcome in events:
                    assert outcome.audit.result == "pending"
                    assert outcome.audit.pending_replicas == ["b1"]
                assert _holds(plane, "b0", "READY", 100)
                assert _replica_api("b1")["converged"] is not True
                # The collector gives up on the silent stream: b1 shows as down.
                await wait_for(lambda: not _sample(plane, "b1").up, timeout_s=30, what="b1 down")
                api_while_paused = _replica_api("b1")
                await asyncio.sleep(1.0)  # still paused: nothing may say it converged

                processes["b1"].resume()
                resumed_at = time.monotonic()
                await wait_for(
                    lambda: _sample(plane, "b1").converged is True,
                    timeout_s=60, what="b1 converged after SIGCONT",
                )  # fmt: skip
                converged_after_s = time.monotonic() - resumed_at
                await wait_for(
                    lambda: _replica_api("b1")["converged"] is True,
                    what="the API says b1 converged",
                )
                resumed_calls = await _calls_per_pod(processes["b1"], RESUMED_CALLS)
                audited = await _wait_settled([o.audit.pk for o in events])

    while_paused = [s for s in samples if acted_at <= s.at < resumed_at]
    assert while_paused and all(s.converged is not True for s in while_paused)
    # How long after the first act (the replica paused) it was still said to be converged.
    acting = [s for s in samples if act_started <= s.at < resumed_at]
    unsaid_after_s = next(s.at for s in acting if s.converged is not True) - act_started
    assert api_while_paused["converged"] is not True
    # Converged only while its snapshot shows pod-a in service at the configured weight.
    said = [s for s in samples if s.at >= resumed_at and s.converged is True]
    assert said and all((s.state, s.weight) == ("READY", 100) for s in said)
    assert drained_window_calls > 0 and drained_calls == (0, 0)
    # Back in service on the resumed replica at its configured weight: about half.
    assert resumed_calls["pod-a"] >= RESUMED_CALLS // 4

    for event in audited:
        assert (event.result, event.pending_replicas) == ("ok", [])
        assert "applied on b1 at " in event.detail
    print(
        json.dumps(
            {
                "converged_after_sigcont_s": round(converged_after_s, 2),
                "still_said_converged_after_first_act_s": round(unsaid_after_s, 2),
                "calls_to_drained_pod": sum(drained_calls),
                "calls_while_it_was_drained": drained_window_calls,
                "calls_failed_through_paused_replica": paused.failed,
                "pod_a_share_through_resumed_replica": f"{resumed_calls['pod-a']}/{RESUMED_CALLS}",
            }
        )
    )
