"""The snapshot cache: one consistent, versioned set of resources per client (node id).

As in go-control-plane, the server knows nothing of where resources come from:
the producer calls `set_snapshot`, and streams read `snapshot(node_id)` and
are woken (`watch`) when it changes. A type's version changes only when its
resources do, so a push of unchanged endpoints sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from google.protobuf.message import Message

from balancer.xds.resources import TYPES, Snapshot

Watcher = Callable[[], None]
# The node id under which the snapshot every client gets unless it has its own is kept.
DEFAULT_NODE = ""


class SnapshotCache:
    """Snapshots by node id; a node without its own gets the default one."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {DEFAULT_NODE: Snapshot({t: {} for t in TYPES})}
        self._counters: dict[str, int] = dict.fromkeys(TYPES, 0)
        self._watchers: set[Watcher] = set()

    def snapshot(self, node_id: str) -> Snapshot:
        return self._snapshots.get(node_id) or self._snapshots[DEFAULT_NODE]

    def set_snapshot(
        self, resources: Mapping[str, Mapping[str, Message]], node_id: str = DEFAULT_NODE
    ) -> Snapshot:
        """Stores `resources` for `node_id` (the default: every client) and wakes the streams.

        A type whose resources are unchanged keeps its version; a changed one gets a new
        version, unique across the cache's life.
        """
        old = self.snapshot(node_id)
        versions = {}
        for type_url in TYPES:
            new = resources.get(type_url, {})
            if _same(old.resources.get(type_url, {}), new) and old.version(type_url):
                versions[type_url] = old.version(type_url)
            else:
                self._counters[type_url] += 1
                versions[type_url] = str(self._counters[type_url])
        snapshot = Snapshot({t: dict(resources.get(t, {})) for t in TYPES}, versions)
        self._snapshots[node_id] = snapshot
        for wake in list(self._watchers):
            wake()
        return snapshot

    def watch(self, wake: Watcher) -> Callable[[], None]:
        """Calls `wake` after every `set_snapshot`; returns the function that stops it."""
        self._watchers.add(wake)
        return lambda: self._watchers.discard(wake)


def _same(a: Mapping[str, Message], b: Mapping[str, Message]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].SerializeToString(deterministic=True) == b[k].SerializeToString(deterministic=True)
        for k in a
    )
