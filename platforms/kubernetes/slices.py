"""EndpointSlices → balancer discovery updates (pure: no client, no I/O).

A Service's endpoints are spread over several EndpointSlices (one per 100
endpoints by default, and the controller moves endpoints between them), so the
view merges every slice labelled `kubernetes.io/service-name=<service>` and
diffs the merged set: an endpoint that moves from one slice to another changes
nothing, and one that leaves every slice is removed.

Conditions map to the balancer's words: `ready` → a READY candidate; `terminating`
→ drained (`Address.terminating`: in-flight calls and streams finish); not ready →
kept, no requests; gone from every slice → Remove.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from balancer.discovery import Add, Remove, Reset, Update
from balancer.endpoint import Address

log = logging.getLogger(__name__)

Obj = Mapping[str, Any]
Port = int | str | None
SERVICE_LABEL = "kubernetes.io/service-name"


def service_selector(service: str) -> str:
    """The label selector of a Service's EndpointSlices."""
    return f"{SERVICE_LABEL}={service}"


def slice_port(slice_: Obj, port: Port) -> int | None:
    """The endpoints' port in this slice: `port` itself when a number; the slice's port of
    that name when a string; with no `port`, the slice's only port (or the one named
    `grpc`). None when the slice has no such port."""
    if isinstance(port, int):
        return port
    ports = [p for p in slice_.get("ports") or () if p.get("port") is not None]
    if port is not None:
        named = [p for p in ports if p.get("name") == port]
    else:
        named = ports if len(ports) == 1 else [p for p in ports if p.get("name") == "grpc"]
    return int(named[0]["port"]) if named else None


def endpoint_address(endpoint: Obj, port: int) -> Address | None:
    """One slice endpoint as an `Address`; None when it has no address."""
    addresses = endpoint.get("addresses") or ()
    if not addresses:
        return None
    conditions = endpoint.get("conditions") or {}
    # The API: an unset `ready` is unknown and consumers treat it as ready;
    # an unset `serving` follows `ready`; an unset `terminating` is false.
    ready = conditions.get("ready") is not False
    serving = conditions.get("serving", ready) is not False
    terminating = conditions.get("terminating") is True
    target = endpoint.get("targetRef") or {}
    pod = target.get("name") if target.get("kind") == "Pod" else None
    return Address(
        str(addresses[0]),
        port,
        pod_name=pod,
        ready=serving if terminating else ready,
        terminating=terminating,
    )


def _resource_version(slice_: Obj) -> int:
    value = (slice_.get("metadata") or {}).get("resourceVersion") or "0"
    return int(value) if str(value).isdigit() else 0


class SliceView:
    """The merged endpoints of one Service's slices, turned into discovery updates.

    `listed` (after a list) gives a Reset equal to the listed truth; `changed` (a
    watch event) gives the Add and Remove that take the previous merged set to the
    new one — nothing when the merged set did not change.
    """

    def __init__(self, service: str, port: Port) -> None:
        self.service = service
        self._port = port
        self._slices: dict[str, Obj] = {}
        self._current: dict[str, Address] = {}
        self._warned: set[str] = set()

    @property
    def addresses(self) -> dict[str, Address]:
        return dict(self._current)

    def listed(self, slices: Iterable[Obj]) -> list[Update]:
        self._slices = {s["metadata"]["name"]: s for s in slices}
        self._current = self._merge()
        return [Reset(tuple(self._current.values()))]

    def changed(self, event_type: str, slice_: Obj) -> list[Update]:
        name = slice_["metadata"]["name"]
        if event_type == "DELETED":
            self._slices.pop(name, None)
        else:
            self._slices[name] = slice_
        merged = self._merge()
        updates: list[Update] = []
        changed = tuple(a for i, a in merged.items() if self._current.get(i) != a)
        if changed:
            updates.append(Add(changed))
        gone = tuple(i for i in self._current if i not in merged)
        if gone:
            updates.append(Remove(gone))
        self._current = merged
        return updates

    def _merge(self) -> dict[str, Address]:
        """Every slice's endpoints; an endpoint in two slices (mid-move) as the newer says."""
        merged: dict[str, Address] = {}
        for slice_ in sorted(self._slices.values(), key=_resource_version):
            port = slice_port(slice_, self._port)
            if port is None:
                self._warn_port(slice_)
                continue
            for endpoint in slice_.get("endpoints") or ():
                address = endpoint_address(endpoint, port)
                if address is not None:
                    merged[address.endpoint_id] = address
        return merged

    def _warn_port(self, slice_: Obj) -> None:
        name = slice_["metadata"]["name"]
        if name in self._warned:
            return
        self._warned.add(name)
        ports = ", ".join(
            f"{p.get('name') or '(unnamed)'}={p.get('port')}" for p in slice_.get("ports") or ()
        )
        wanted = f"port {self._port!r}" if self._port is not None else "a single or 'grpc' port"
        log.warning(
            "service %s: EndpointSlice %s has no %s (its ports: %s); its endpoints are left out:"
            " set discovery.port to one of its port names",
            self.service, name, wanted, ports or "none",
        )  # fmt: skip
