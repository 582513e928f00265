"""List and watch a Service's EndpointSlices, informer-style, off the event loop.

The official client's watch blocks, so a thread (`_SlicePump`) lists, then
watches from the list's resourceVersion with bookmarks, and puts what it sees on
one asyncio queue in order; `watch_slices` turns it into discovery updates
(`SliceView`). As client-go's reflector does:

- a watch that ends (the server's timeout) or breaks (connection lost) resumes
  from the last resourceVersion seen, bookmarks included: no event is lost or
  repeated, and nothing is re-listed;
- 410 Gone (the history was compacted) re-lists, and the list becomes a Reset
  that equals the truth;
- errors are retried after a jittered exponential backoff, logged on one line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch

from balancer.discovery import Update
from platforms.kubernetes.config import KubernetesSettings
from platforms.kubernetes.slices import Port, SliceView, service_selector

log = logging.getLogger(__name__)

Obj = dict[str, Any]
GONE = 410


@dataclass(frozen=True)
class Listed:
    slices: list[Obj]


@dataclass(frozen=True)
class Changed:
    event_type: str  # ADDED, MODIFIED, DELETED
    slice: Obj


Item = Listed | Changed


class Backoff:
    """Exponential backoff with jitter (half fixed, half random), reset on success."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._rng = rng
        self.failures = 0

    def next_delay_s(self) -> float:
        ceiling = min(self._max_s, self._initial_s * 2**self.failures)
        self.failures += 1
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.failures = 0


class _SlicePump:
    """The thread's side: list, watch, resume, re-list; `put` each item in order."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        service: str,
        settings: KubernetesSettings,
        put: Callable[[Item], None],
        rng: random.Random,
    ) -> None:
        self._slices = client.DiscoveryV1Api(api)
        self._sanitize = api.sanitize_for_serialization
        self._namespace = namespace
        self._service = service
        self._selector = service_selector(service)
        self._settings = settings
        self._put = put
        self._backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, rng)
        self._stopped = threading.Event()
        self._watch: watch.Watch | None = None
        self.resource_version: str | None = None

    def stop(self) -> None:
        """Ends the pump: its blocking read is interrupted (the socket shut down)."""
        self._stopped.set()
        current = self._watch
        if current is not None:
            current.stop()

    def run(self) -> None:
        while not self._stopped.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                self._follow()
            except client.ApiException as err:
                if err.status == GONE:
                    log.info("service %s: watch history expired (410 Gone); re-listing",
                             self._name)  # fmt: skip
                    self.resource_version = None
                    continue
                self._retry(f"API error {err.status} {err.reason}")
            except Exception as err:  # connection refused, reset, timed out: retried
                self._retry(f"{type(err).__name__}: {err}")

    @property
    def _name(self) -> str:
        return f"{self._namespace}/{self._service}"

    def _retry(self, why: str) -> None:
        if self._stopped.is_set():
            return
        delay_s = self._backoff.next_delay_s()
        log.warning("service %s: EndpointSlice watch failed (%s); retrying in %.1f s",
                    self._name, why, delay_s)  # fmt: skip
        self._stopped.wait(delay_s)

    def _list(self) -> None:
        result = self._slices.list_namespaced_endpoint_slice(
            self._namespace,
            label_selector=self._selector,
            _request_timeout=self._settings.request_timeout_s,
        )
        slices = [self._sanitize(item) for item in result.items or ()]
        self._put(Listed(slices))
        self.resource_version = result.metadata.resource_version if result.metadata else None
        self._backoff.reset()

    def _follow(self) -> None:
        """One watch request from `resource_version`, until it ends or breaks."""
        self._watch = current = watch.Watch()
        if self._stopped.is_set():
            return
        timeout_s = self._settings.watch_timeout_s
        events = current.stream(
            self._slices.list_namespaced_endpoint_slice,
            self._namespace,
            label_selector=self._selector,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=max(1, round(timeout_s)),
            # A silent connection is dead once the server's timeout has long passed.
            _request_timeout=(self._settings.request_timeout_s, timeout_s + 30),
        )
        for event in events:
            if self._stopped.is_set():
                return
            self._take(event)

    def _take(self, event: Obj) -> None:
        raw = event["raw_object"]
        version = (raw.get("metadata") or {}).get("resourceVersion")
        if event["type"] != "BOOKMARK":
            self._put(Changed(event["type"], raw))
        if version:
            self.resource_version = version
        self._backoff.reset()


async def watch_slices(
    api: client.ApiClient,
    namespace: str,
    service: str,
    port: Port,
    settings: KubernetesSettings,
    rng: random.Random | None = None,
) -> AsyncIterator[Update]:
    """Discovery updates of a Service's endpoints: a Reset (after every list), then the
    Add and Remove of each change, in order. Runs until the caller stops iterating."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Item] = asyncio.Queue()

    def put(item: Item) -> None:
        if not loop.is_closed():  # else the watcher is gone with its loop
            loop.call_soon_threadsafe(queue.put_nowait, item)

    pump = _SlicePump(api, namespace, service, settings, put, rng or random.Random())
    thread = threading.Thread(target=pump.run, name=f"watch {service}", daemon=True)
    view = SliceView(f"{namespace}/{service}", port)
    thread.start()
    try:
        while True:
            item = await queue.get()
            updates = view.listed(item.slices) if isinstance(item, Listed) else view.changed(
                item.event_type, item.slice)  # fmt: skip
            for update in updates:
                yield update
    finally:
        pump.stop()
