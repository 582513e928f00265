"""One Deployment on this machine: keeps `replicas` pods and replaces those that end.

It plays the Deployment and ReplicaSet controllers (and the kubelet's restart
policy): a pod that crashes or is OOMKilled is replaced in its slot after a
CrashLoopBackOff delay; `restart_pod` replaces one pod as an eviction does
(the old one goes, then the new one starts); `rollout_restart` surges one new
pod at a time and removes an old one only once the new one is ready
(RollingUpdate, maxSurge 1, maxUnavailable 0); `scale` adds or removes slots.

Locks: operator actions (restart, rollout, scale) take the deployment's lock,
one at a time; whoever replaces or removes a slot's pod also holds that slot's
lock (always after the deployment's, never two slots at once), so a crash
replacement and an operator action never both start a pod for one slot.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

from balancer.endpoint import Address
from platforms.base import PlatformError, PodFacts, UnknownPod
from platforms.local.events import EndpointWatchers, EventLog
from platforms.local.naming import Ports, pod_name, template_hash
from platforms.local.pod import Pod, Slot, pod_facts
from platforms.local.runner import PodRunner
from platforms.local.spec import DeploymentSpec


class Pulse:
    """Wakes every coroutine waiting at the moment it fires."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


def _removal_rank(slot: Slot) -> tuple[bool, bool, float]:
    """Sort key, first to go first: unready before ready, Pending before Running, newest first."""
    pod = slot.pod
    if pod is None:
        return (False, False, 0.0)
    return (pod.ready, pod.phase == "Running", -pod.created_s)


class Deployment:
    """A deployment's pods. Every method runs on the event loop that called `start`."""

    def __init__(
        self,
        spec: DeploymentSpec,
        *,
        events: EventLog,
        watchers: EndpointWatchers,
        ports: Ports,
        clock: Callable[[], float],
        rng: random.Random,
        used_names: set[str],
        log_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.replicas = spec.replicas
        self._events = events
        self._ports = ports
        self._rng = rng
        self._used_names = used_names  # shared by all deployments: a name is never reused
        self._generation = 0
        self._template_hash = template_hash(spec, 0)
        self._slots: list[Slot] = []
        self._lock = asyncio.Lock()
        self._changed = Pulse()
        self._stopping = False
        self._runner = PodRunner(
            spec,
            events=events,
            watchers=watchers,
            clock=clock,
            log_dir=log_dir,
            on_exit=self._pod_ended,
            on_change=self._changed.fire,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    async def start(self) -> None:
        """Starts the spec's replicas; returns once their processes exist (not yet ready)."""
        async with self._lock:
            await self._add_slots(self.replicas)

    async def stop(self) -> None:
        """Stops every pod (SIGTERM, grace, SIGKILL); returns once all are reaped."""
        self._stopping = True
        await asyncio.gather(*(self._remove_slot(slot, "stop") for slot in list(self._slots)))

    def pods(self) -> list[Pod]:
        """Current pods, oldest first; a pod that crashed stays until it is replaced."""
        pods = [slot.pod for slot in self._slots if slot.pod is not None]
        return sorted(pods, key=lambda pod: pod.created_s)

    def facts(self) -> list[PodFacts]:
        return [pod_facts(pod, self.spec.memory_limit_bytes) for pod in self.pods()]

    def addresses(self) -> list[Address]:
        """Addresses of the pods whose process runs, ready or not."""
        return [pod.address for pod in self.pods() if pod.running]

    def find(self, name: str) -> Pod | None:
        return next((pod for pod in self.pods() if pod.name == name), None)

    def sample(self, now_s: float) -> None:
        for pod in self.pods():
            self._runner.sample(pod, now_s)

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> None:
        """Returns once `condition()` holds; raises TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                await self._changed.wait()

    def all_ready(self) -> bool:
        pods = self.pods()
        return len(pods) == self.replicas and all(pod.ready for pod in pods)

    async def restart_pod(self, name: str) -> None:
        """Replaces pod `name`: it goes first, then its slot gets a new pod.

        As an eviction on Kubernetes: the replacement is a new pod, restart count 0 and
        no last termination (a crash, by contrast, counts a restart: `_respawn`).
        """
        async with self._lock:
            pod = self.find(name)
            if pod is None:
                raise UnknownPod(name)
            slot = pod.slot
            async with slot.lock:
                if slot.pod is not pod or slot.removed:
                    raise UnknownPod(name)  # replaced while we waited for the lock
                await self._runner.stop(pod, "restart")
                self._cancel_respawn(slot)
                slot.restart_count = 0
                slot.crashes_in_a_row = 0
                slot.last_termination = None
                await self._start_pod(slot)

    async def scale(self, replicas: int) -> None:
        """Adds or removes slots until there are `replicas`; raises PlatformError below 0."""
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise PlatformError(f"replicas must be an integer of at least 0, got {replicas!r}")
        async with self._lock:
            self.replicas = replicas
            surplus = len(self._slots) - replicas
            if surplus < 0:
                await self._add_slots(-surplus)
            victims = sorted(self._slots, key=_removal_rank)[: max(surplus, 0)]
            await asyncio.gather(*(self._remove_slot(slot, "scale down") for slot in victims))

    async def rollout_restart(self) -> None:
        """Replaces every pod, one at a time, each new one ready before an old one goes.

        Raises PlatformError when a new pod is not ready within the progress
        deadline: that pod is removed, and the old pods not yet replaced stay.
        """
        async with self._lock:
            self._generation += 1
            self._template_hash = template_hash(self.spec, self._generation)
            for old in sorted(self._slots, key=_removal_rank):
                await self._surge_then_remove(old)

    async def _surge_then_remove(self, old: Slot) -> None:
        new = self._new_slot()
        async with new.lock:
            await self._start_pod(new)
        try:
            await self.wait_until(lambda: self._ready_or_gone(new), self.spec.progress_deadline_s)
        except TimeoutError:
            await self._remove_slot(new, "rollout stalled")
            raise PlatformError(
                f"rollout of {self.name} stalled: a new pod was not ready within"
                f" {self.spec.progress_deadline_s:g} s; the pods not yet replaced are kept"
            ) from None
        if new.removed:
            raise PlatformError(f"rollout of {self.name} stopped: the deployment is stopping")
        await self._remove_slot(old, "rollout")

    def _ready_or_gone(self, slot: Slot) -> bool:
        return slot.removed or (slot.pod is not None and slot.pod.ready)

    async def _add_slots(self, count: int) -> None:
        slots = [self._new_slot() for _ in range(count)]
        await asyncio.gather(*(self._start_in(slot) for slot in slots))

    async def _start_in(self, slot: Slot) -> None:
        async with slot.lock:
            await self._start_pod(slot)

    def _new_slot(self) -> Slot:
        slot = Slot(self._template_hash)
        self._slots.append(slot)
        return slot

    async def _remove_slot(self, slot: Slot, why: str) -> None:
        async with slot.lock:
            slot.removed = True
            self._cancel_respawn(slot)
            if slot.pod is not None:
                await self._runner.stop(slot.pod, why)
        if slot in self._slots:
            self._slots.remove(slot)
        self._changed.fire()

    async def _start_pod(self, slot: Slot) -> None:
        """Starts a new pod in `slot`; the caller holds the slot's lock."""
        if self._stopping:
            raise PlatformError(f"deployment {self.name} is stopping")
        name = pod_name(f"{self.name}-{slot.template_hash}", self._rng, self._used_names)
        self._used_names.add(name)
        metrics_port = self._ports.take() if self.spec.uses_metrics_port else None
        pod = Pod(
            name=name,
            deployment=self.name,
            slot=slot,
            host=self._ports.host,
            port=self._ports.take(),
            metrics_port=metrics_port,
            restart_count=slot.restart_count,
            created_s=asyncio.get_running_loop().time(),
        )
        slot.pod = pod
        await self._runner.start(pod)

    def _pod_ended(self, pod: Pod) -> None:
        """A pod's process ended: if nobody meant it to, replace it after the backoff."""
        self._ports.release(pod.port, pod.metrics_port)
        if pod.stopping is not None or self._stopping:
            return
        slot = pod.slot
        slot.last_termination = pod.termination
        ran_s = asyncio.get_running_loop().time() - pod.created_s
        reset = ran_s >= self.spec.backoff.reset_after_s
        slot.crashes_in_a_row = 1 if reset else slot.crashes_in_a_row + 1
        delay_s = self.spec.backoff.delay_s(slot.crashes_in_a_row)
        if delay_s > 0:
            self._events.record(self.name, pod.name, "BackOff", f"replaced in {delay_s:g} s")
        slot.respawn = asyncio.get_running_loop().create_task(self._respawn(slot, pod, delay_s))

    async def _respawn(self, slot: Slot, ended: Pod, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with slot.lock:
            if slot.removed or slot.pod is not ended or self._stopping:
                return  # replaced or removed meanwhile
            slot.restart_count += 1
            await self._start_pod(slot)

    def _cancel_respawn(self, slot: Slot) -> None:
        """Cancels a pending replacement; the caller holds the slot's lock: it is not mid-start."""
        if slot.respawn is not None and slot.respawn is not asyncio.current_task():
            slot.respawn.cancel()
        slot.respawn = None
