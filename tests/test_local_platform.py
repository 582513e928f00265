"""The local platform with real pod processes (tests/support/pod.py) on loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc.aio
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from balancer.discovery import Add, Remove, Reset, Update
from platforms.base import PlatformError, PodFacts, UnknownDeployment, UnknownPod
from platforms.local import BackoffSpec, DeploymentSpec, LocalPlatform, ProbeSpec
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
POD = str(ROOT / "tests" / "support" / "pod.py")
NAME = re.compile(r"^inventory-([a-z0-9]{5})-[a-z0-9]{5}$")
MB = 1024 * 1024
# Pods start slowly on a loaded machine; the deadlines are generous, the waits are not.
SLOW_S = 30.0

Start = Callable[..., Awaitable[LocalPlatform]]
# Pods start through a launcher that sets the parent-death signal: Linux only.
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="uses Linux's prctl")


def spec(*knobs: str, name: str = "inventory", replicas: int = 1, **fields: Any) -> DeploymentSpec:
    """A deployment of tests/support/pod.py with fast probes and short backoffs."""
    base = DeploymentSpec(
        name=name,
        argv=(sys.executable, POD, "--port", "{port}", "--metrics-port", "{metrics_port}", *knobs),
        replicas=replicas,
        termination_grace_s=5.0,
        probe=ProbeSpec(interval_s=0.1, timeout_s=2.0, failure_threshold=3),
        backoff=BackoffSpec(initial_s=0.2, max_s=1.0, reset_after_s=30.0),
    )
    return replace(base, **fields)


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    """Starts a LocalPlatform (seeded names, pod logs in tmp_path); stops it at teardown."""
    started: list[LocalPlatform] = []

    async def start(*specs: DeploymentSpec) -> LocalPlatform:
        platform = LocalPlatform(
            specs, rng=random.Random(7), sample_interval_s=0.1, log_dir=tmp_path
        )
        started.append(platform)
        await platform.start()
        return platform

    yield start
    for platform in started:
        await platform.stop()


async def ready_pods(platform: LocalPlatform, deployment: str = "inventory") -> list[PodFacts]:
    await platform.wait_ready(deployment, SLOW_S)
    return await platform.list_pods(deployment)


async def pod_where(
    platform: LocalPlatform, predicate: Callable[[PodFacts], bool], what: str
) -> PodFacts:
    """Polls list_pods until a pod matches `predicate`; returns it, or fails after SLOW_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SLOW_S
    while loop.time() < deadline:
        for pod in await platform.list_pods("inventory"):
            if predicate(pod):
                return pod
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {SLOW_S} s waiting for {what}")


def template_of(pod_name: str) -> str:
    """The pod template hash in a name like `inventory-5f7c9-x2k4q`; fails on another shape."""
    match = NAME.match(pod_name)
    assert match, f"{pod_name!r} is not <deployment>-<hash5>-<suffix5>"
    return match.group(1)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie runs nothing)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class Watch:
    """Collects a watch_endpoints stream in the background."""

    def __init__(self, platform: LocalPlatform, service: str = "inventory") -> None:
        self.updates: list[Update] = []
        self._task = asyncio.create_task(self._collect(platform.watch_endpoints(service)))

    async def _collect(self, stream: AsyncIterator[Update]) -> None:
        async for update in stream:
            self.updates.append(update)

    def ready_counts(self) -> list[int]:
        """How many endpoints were ready after each update."""
        ready: dict[str, bool] = {}
        counts = []
        for update in self.updates:
            if isinstance(update, Reset):
                ready = {a.endpoint_id: a.ready for a in update.addresses}
            elif isinstance(update, Add):
                ready.update({a.endpoint_id: a.ready for a in update.addresses})
            else:
                for endpoint_id in update.endpoint_ids:
                    ready.pop(endpoint_id, None)
            counts.append(sum(ready.values()))
        return counts

    def added(self, name: str, ready: bool) -> bool:
        return any(
            isinstance(u, Add) and any(a.pod_name == name and a.ready is ready for a in u.addresses)
            for u in self.updates
        )

    def removed(self, name: str) -> bool:
        return any(isinstance(u, Remove) and name in u.endpoint_ids for u in self.updates)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def serving(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


async def test_it_starts_replicas_that_become_ready_with_generated_names_and_own_ports(start):
    platform = await start(spec(replicas=3))
    pods = await ready_pods(platform)
    assert len(pods) == 3
    assert len({p.name for p in pods}) == 3
    ports = {p.address for p in pods} | {p.metrics_address for p in pods}
    assert len(ports) == 6 and None not in ports
    assert len({template_of(p.name) for p in pods}) == 1  # one ReplicaSet
    assert all(p.phase == "Running" and p.restart_count == 0 for p in pods)
    assert all(p.started_at_s is not None and p.last_termination_reason is None for p in pods)
    assert all([await serving(p.address) for p in pods if p.address])


async def test_it_watches_endpoints_with_a_reset_first_then_adds_and_removes(start):
    platform = await start(spec(replicas=2))
    before = await ready_pods(platform)
    watch = Watch(platform)
    await wait_for(lambda: watch.updates, what="the first update")
    first = watch.updates[0]
    assert isinstance(first, Reset)
    assert {(a.pod_name, a.ready) for a in first.addresses} == {(p.name, True) for p in before}
    assert {a.target for a in first.addresses} == {p.address for p in before}

    old = before[0].name
    await platform.restart_pod(old)
    new = next(p.name for p in await platform.list_pods("inventory") if p.name != before[1].name)
    await wait_for(lambda: watch.added(new, ready=True), SLOW_S, "the new pod added ready")
    assert watch.added(old, ready=False)  # unready as soon as it started terminating
    assert watch.removed(old)
    assert watch.added(new, ready=False)  # known before it is ready
    await watch.close()


async def test_it_restarts_a_pod_as_a_new_pod_with_restart_count_0_as_an_eviction_does(start):
    platform = await start(spec(replicas=2))
    old, other = await ready_pods(platform)
    old_pid = platform.pod_pid(old.name)
    assert old_pid is not None and alive(old_pid)

    await platform.restart_pod(old.name)

    assert not alive(old_pid)  # gone (and reaped) by the time restart_pod returns
    pods = await platform.list_pods("inventory")
    (same,) = [p for p in pods if p.name == other.name]
    assert (same.address, same.started_at_s) == (other.address, other.started_at_s)  # untouched
    (new,) = [p for p in pods if p.name != other.name]
    assert new.name != old.name
    assert (new.restart_count, new.last_termination_reason) == (0, None)  # a new pod
    assert await pod_where(platform, lambda p: p.name == new.name and p.ready, "new pod ready")
    with pytest.raises(UnknownPod):
        await platform.restart_pod(old.name)


async def test_it_rolls_out_each_new_pod_ready_before_an_old_one_goes(start):
    platform = await start(spec(replicas=3))
    old = {p.name for p in await ready_pods(platform)}
    watch = Watch(platform)
    await wait_for(lambda: watch.updates, what="the first update")
    first_event = len(platform.events())

    await platform.rollout_restart("inventory")

    events = platform.events()[first_event:]
    new_ready, old_gone = 0, 0
    for event in events:
        if event.kind == "Ready" and event.pod not in old:
            new_ready += 1
        if event.kind == "Killing" and event.pod in old:
            old_gone += 1
            assert event.detail == "rollout"
            assert new_ready >= old_gone, events  # maxSurge 1, maxUnavailable 0
    assert (new_ready, old_gone) == (3, 3)
    assert [e.at_s for e in events] == sorted(e.at_s for e in events)
    assert min(watch.ready_counts()) == 3  # never fewer ready endpoints than replicas
    pods = await platform.list_pods("inventory")
    assert len(pods) == 3 and not {p.name for p in pods} & old
    assert not {template_of(p.name) for p in pods} & {template_of(n) for n in old}
    assert all(p.ready and p.restart_count == 0 for p in pods)  # a new ReplicaSet's pods
    await watch.close()


async def test_it_keeps_the_old_pods_when_a_rollout_stalls(start, tmp_path):
    flag = tmp_path / "new-pods-not-serving"
    platform = await start(
        spec("--not-serving-if-file", str(flag), replicas=2, progress_deadline_s=1.5)
    )
    old = {p.name for p in await ready_pods(platform)}
    flag.touch()

    with pytest.raises(PlatformError, match="stalled"):
        await platform.rollout_restart("inventory")

    pods = await platform.list_pods("inventory")
    assert {p.name for p in pods} == old
    assert all(p.ready for p in pods)


async def test_it_scales_up_and_down(start):
    platform = await start(spec(replicas=1))
    (first,) = await ready_pods(platform)

    await platform.scale("inventory", 3)
    pods = await ready_pods(platform)
    assert len(pods) == 3 and first.name in {p.name for p in pods}
    pids = {p.name: platform.pod_pid(p.name) for p in pods}

    await platform.scale("inventory", 1)
    (kept,) = await platform.list_pods("inventory")
    assert kept.name == first.name  # the newest go first
    assert not any(alive(pid) for name, pid in pids.items() if name != kept.name and pid)

    await platform.scale("inventory", 0)
    assert await platform.list_pods("inventory") == []
    with pytest.raises(PlatformError):
        await platform.scale("inventory", -1)
    with pytest.raises(UnknownDeployment):
        await platform.scale("nope", 1)


async def test_it_kills_a_pod_over_its_memory_limit_as_oomkilled_and_replaces_it(start):
    limit = 90 * MB  # a pod starts at about 40 MB resident
    platform = await start(spec("--grow-bytes-per-s", str(40 * MB), memory_limit_bytes=limit))
    (first,) = await platform.list_pods("inventory")

    replaced = await pod_where(
        platform, lambda p: p.restart_count == 1 and p.name != first.name, "a replacement"
    )

    assert replaced.last_termination_reason == "OOMKilled"
    assert replaced.last_termination_exit_code == 137
    assert replaced.last_terminated_at_s is not None
    assert replaced.memory_limit_bytes == limit
    kill = next(e for e in platform.events() if e.pod == first.name and e.kind == "Killing")
    assert kill.detail.startswith("OOMKilled")


async def test_it_records_a_crash_as_error_with_its_exit_code_and_replaces_it(start):
    crashing = {"POD_EXIT_CODE": "3", "POD_EXIT_AFTER_S": "0.5"}  # via env: env reaches pods
    platform = await start(spec(env=crashing))
    (first,) = await platform.list_pods("inventory")

    replaced = await pod_where(
        platform, lambda p: p.restart_count >= 1 and p.name != first.name, "a replacement"
    )

    assert replaced.last_termination_reason == "Error"
    assert replaced.last_termination_exit_code == 3
    crashed = await pod_where(platform, lambda p: p.phase == "Failed", "a failed pod")
    assert crashed.last_termination_exit_code == 3 and not crashed.ready
    await wait_for(lambda: any(e.kind == "BackOff" for e in platform.events()), SLOW_S, "BackOff")


@linux_only
async def test_it_reports_a_command_that_cannot_run_as_error_127(start):
    platform = await start(spec(argv=("/nonexistent/server", "--port", "{port}")))

    failed = await pod_where(platform, lambda p: p.last_termination_exit_code == 127, "exit 127")

    assert failed.last_termination_reason == "Error"


async def test_it_measures_cpu_and_resident_memory_per_pod(start):
    platform = await start(spec("--grow-bytes-per-s", str(20 * MB)))

    first = await pod_where(
        platform, lambda p: p.memory_bytes is not None and p.cpu_millicores is not None, "usage"
    )
    assert first.memory_bytes is not None and 10 * MB < first.memory_bytes < 1024 * MB
    assert first.cpu_millicores is not None and first.cpu_millicores >= 0
    assert first.memory_limit_bytes is None
    start_bytes = first.memory_bytes
    await pod_where(
        platform, lambda p: (p.memory_bytes or 0) > start_bytes + 20 * MB, "memory growth"
    )


async def test_it_leaves_no_process_behind_when_stopped(start, tmp_path):
    child_pid_file = str(tmp_path / "{name}.child")
    platform = await start(
        spec("--child-pid-file", child_pid_file, replicas=2),
        spec("--ignore-sigterm", name="stubborn", termination_grace_s=0.3),
    )
    pods = await ready_pods(platform) + await ready_pods(platform, "stubborn")
    pids = [platform.pod_pid(p.name) for p in pods]
    child_files = [Path(child_pid_file.format(name=p.name)) for p in pods[:2]]
    await wait_for(lambda: all(f.exists() and f.read_text() for f in child_files), SLOW_S)
    children = [int(f.read_text()) for f in child_files]
    assert all(pid and alive(pid) for pid in pids + children)

    await platform.stop()

    assert not any(pid and alive(pid) for pid in pids)  # reaped before stop returns
    await wait_for(lambda: not any(alive(pid) for pid in children), SLOW_S, "children gone")
    stubborn = [e for e in platform.events() if e.deployment == "stubborn" and e.kind == "Exited"]
    assert stubborn[-1].detail.endswith("exit code 137")  # SIGKILL after the grace period


@linux_only
async def test_it_leaves_no_orphan_when_the_supervisor_is_killed(tmp_path):
    supervisor = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "platforms.local", "--name", "inventory", "--replicas", "2"),
        *("--json", "--print-every-s", "0.1", "--probe-interval-s", "0.1"),
        *("--log-dir", str(tmp_path), "--", sys.executable, POD, "--port", "{port}"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        pids = await asyncio.wait_for(_pids_once_ready(supervisor), SLOW_S)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)

        supervisor.send_signal(signal.SIGKILL)
        await supervisor.wait()

        await wait_for(lambda: not any(alive(pid) for pid in pids), SLOW_S, "pods gone")
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()


async def _pids_once_ready(supervisor: asyncio.subprocess.Process) -> list[int]:
    assert supervisor.stdout is not None
    while line := await supervisor.stdout.readline():
        pods = json.loads(line)["pods"]
        if len(pods) == 2 and all(p["ready"] for p in pods):
            return [p["pid"] for p in pods]
    raise AssertionError(f"the supervisor exited with code {await supervisor.wait()}")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "Inventory"}, "lower-case"),
        ({"name": "x" * 52}, "longer"),
        ({"replicas": -1}, "replicas"),
        ({"argv": ()}, "argv"),
        ({"argv": ("server", "--port", "{prot}")}, "unknown placeholder"),
        ({"termination_grace_s": -1.0}, "termination_grace_s"),
        ({"memory_limit_bytes": 0}, "memory_limit_bytes"),
        ({"env": {"A=B": "1"}}, "env"),
    ],
)
def test_it_rejects_an_invalid_deployment_spec(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**fields)


def test_it_backs_off_crashes_like_crashloopbackoff() -> None:
    backoff = BackoffSpec(initial_s=10, max_s=300, reset_after_s=600)
    delays = [backoff.delay_s(n) for n in range(1, 9)]
    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]
