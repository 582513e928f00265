"""What the local platform tells: an event log (as `kubectl get events`) and endpoint watches."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address

EventKind = Literal["Started", "Ready", "Unready", "Killing", "Exited", "BackOff"]


@dataclass(frozen=True)
class PodEvent:
    """Something that happened to a pod; `at_s` comes from the platform's clock.

    `detail` says why or how: the reason for a Killing ("restart", "scale down",
    "rollout", "stop", "OOMKilled"), the end for Exited ("Error, exit code 3"),
    the delay for a BackOff.
    """

    at_s: float
    deployment: str
    pod: str
    kind: EventKind
    detail: str = ""


class EventLog:
    """The latest `size` events, oldest first; `on_event` (if given) sees each one as it comes."""

    def __init__(
        self,
        clock: Callable[[], float],
        size: int = 1000,
        on_event: Callable[[PodEvent], None] | None = None,
    ) -> None:
        self._clock = clock
        self._events: deque[PodEvent] = deque(maxlen=size)
        self._on_event = on_event

    def record(self, deployment: str, pod: str, kind: EventKind, detail: str = "") -> None:
        event = PodEvent(self._clock(), deployment, pod, kind, detail)
        self._events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def snapshot(self) -> tuple[PodEvent, ...]:
        return tuple(self._events)


_END = None  # put on a watcher's queue when the platform stops


class EndpointWatchers:
    """Fans discovery updates out to the watchers of each service.

    A watcher's first update is a Reset of the addresses at that moment; then it
    gets every later change, in order, with no loss (queues are unbounded:
    updates come at the pace of pod changes, not of requests).
    """

    def __init__(self) -> None:
        self._queues: dict[str, set[asyncio.Queue[Update | None]]] = {}
        self._closed = False

    async def watch(
        self, service: str, current: Callable[[], Iterable[Address]]
    ) -> AsyncIterator[Update]:
        """Yields a Reset of `current()`, then the service's updates until `close`."""
        queue: asyncio.Queue[Update | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(_END)
        # Registered in the same step as the Reset is taken: no update falls between.
        self._queues.setdefault(service, set()).add(queue)
        try:
            yield Reset(tuple(current()))
            while (update := await queue.get()) is not _END:
                yield update
        finally:
            self._queues[service].discard(queue)

    def publish(self, service: str, update: Update) -> None:
        for queue in self._queues.get(service, ()):
            queue.put_nowait(update)

    def added(self, service: str, address: Address) -> None:
        self.publish(service, Add((address,)))

    def removed(self, service: str, endpoint_id: str) -> None:
        self.publish(service, Remove((endpoint_id,)))

    def close(self) -> None:
        """Ends every watch (after its pending updates), and any begun later after its Reset."""
        self._closed = True
        for queues in self._queues.values():
            for queue in queues:
                queue.put_nowait(_END)
