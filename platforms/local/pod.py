"""The local platform's record of pods and of the replica slots that own them.

A *slot* is one replica of a deployment: when its pod dies or is restarted,
the replacement takes the same slot, with a new name and the slot's restart
count plus one (the local stand-in for a container's restart count). A
rollout restart fills new slots (a new ReplicaSet) whose count starts at 0.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from balancer.endpoint import Address
from platforms.base import Phase, PodFacts
from platforms.local.processes import Process
from platforms.local.resources import UsageMeter

OOM_KILLED = "OOMKilled"
ERROR = "Error"
COMPLETED = "Completed"


@dataclass(frozen=True)
class Termination:
    """How a container ended, as in `lastState.terminated`; `at_s` is Unix seconds."""

    reason: str
    exit_code: int
    at_s: float


@dataclass(eq=False)
class Slot:
    """One replica. `pod` is its current pod (None before the first one starts).

    `last_termination` is the last end nobody asked for (a crash, an OOM kill);
    stopping a pod on purpose (restart, scale down) does not change it.
    """

    template_hash: str
    restart_count: int = 0
    last_termination: Termination | None = None
    pod: Pod | None = None
    # Crashes since the last pod that ran long enough: the backoff's exponent.
    crashes_in_a_row: int = 0
    respawn: asyncio.Task[None] | None = None
    removed: bool = False
    # Held by whoever replaces or removes the slot's pod, so that two never do at once.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(eq=False)
class Pod:
    """One pod: a process on `host:port`, from creation until it is replaced or removed.

    `stopping` says why we stop it on purpose (then its end is no crash);
    `kill_reason` is set when we kill it for the kernel's reasons (OOMKilled).
    """

    name: str
    deployment: str
    slot: Slot
    host: str
    port: int
    metrics_port: int | None
    restart_count: int
    created_s: float  # monotonic, for ordering and backoff
    started_at_s: float | None = None  # Unix seconds, once the process started
    process: Process | None = None
    phase: Phase = "Pending"
    ready: bool = False
    stopping: str | None = None
    kill_reason: str | None = None
    termination: Termination | None = None
    cpu_millicores: float | None = None
    memory_bytes: int | None = None
    meter: UsageMeter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        """Started and not yet reaped."""
        return self.process is not None and self.process.returncode is None

    @property
    def address(self) -> Address:
        return Address(self.host, self.port, pod_name=self.name, ready=self.ready)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def pod_facts(pod: Pod, memory_limit_bytes: int | None) -> PodFacts:
    """What `list_pods` tells of `pod`: its own end if it ended, else its slot's last one."""
    last = pod.termination or pod.slot.last_termination
    return PodFacts(
        name=pod.name,
        deployment=pod.deployment,
        address=pod.address.target,
        phase=pod.phase,
        ready=pod.ready,
        restart_count=pod.restart_count,
        started_at_s=pod.started_at_s,
        last_termination_reason=last.reason if last else None,
        last_termination_exit_code=last.exit_code if last else None,
        last_terminated_at_s=last.at_s if last else None,
        cpu_millicores=pod.cpu_millicores,
        memory_bytes=pod.memory_bytes,
        memory_limit_bytes=memory_limit_bytes,
        metrics_address=None if pod.metrics_port is None else f"{pod.host}:{pod.metrics_port}",
    )
