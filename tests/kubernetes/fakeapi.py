"""A fake Kubernetes API server: real HTTP/1.1 and JSON, as the API server speaks them.

No API server can be installed here, so the Kubernetes tests drive the official
`kubernetes` client, unmodified, against this server through a kubeconfig file
(`write_kubeconfig`). It serves what Ballast uses, with the API's own shapes:

- `discovery.k8s.io/v1` EndpointSlices: list (label selector `key=value[,...]`) and
  watch (chunked, one JSON event a line) from a resourceVersion, BOOKMARK events
  when asked (`allowWatchBookmarks`), `timeoutSeconds`, and a 410 Gone ERROR event
  for a resourceVersion older than the compacted history (`compact`);
- `v1` pods: list (label selector), get; `policy/v1` pods/eviction: 201, or 429
  when a PodDisruptionBudget forbids it (`refuse_evictions`), the pod then deleted;
- `apps/v1` deployments: get, patch (strategic merge and merge patch, as JSON merge
  of the body), a simulated controller that advances `status` one step per read
  after a template change; deployments/scale: get and patch;
- `metrics.k8s.io/v1beta1` PodMetrics: list and get; 404 as a cluster without
  metrics-server answers (`metrics_installed = False`).

Tests change the state through the methods below (`put_slice`, `delete_slice`,
`put_pod`, ...), cut watches (`cut_watches`), and read what the server received
(`requests`). Everything runs in threads of a `ThreadingHTTPServer`.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN = "fake-kubernetes-token-0123456789"
Obj = dict[str, Any]

SLICES = "endpointslices"
PODS = "pods"
DEPLOYMENTS = "deployments"

_KINDS = {
    SLICES: ("discovery.k8s.io/v1", "EndpointSlice"),
    PODS: ("v1", "Pod"),
    DEPLOYMENTS: ("apps/v1", "Deployment"),
}


@dataclass(frozen=True)
class Received:
    """One request the fake server received."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any


@dataclass(eq=False)  # identity: each open watch is its own
class _Watch:
    resource: str
    namespace: str
    selector: dict[str, str]
    cut: str | None = None  # "abrupt" or "clean" once a test cuts it


@dataclass
class _Store:
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    history: list[tuple[int, str, str, str, Obj]] = field(default_factory=list)
    resource_version: int = 100
    compacted: int = 0  # a watch from before this resourceVersion gets 410 Gone


def _status(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge agrees with it on maps)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _matches(obj: Obj, selector: dict[str, str]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _parse_selector(text: str) -> dict[str, str]:
    """`a=b,c=d` → {a: b, c: d}; raises ValueError for anything else (sets, !=)."""
    selector = {}
    for part in filter(None, text.split(",")):
        key, sep, value = part.partition("=")
        if not sep or value.startswith("=") or key.endswith("!"):
            raise ValueError(f"unsupported label selector {text!r}")
        selector[key.strip()] = value.strip()
    return selector


class FakeKubernetes:
    """The fake API server. `start()` binds 127.0.0.1 on a free port; `stop()` ends it."""

    def __init__(self, *, bookmark_interval_s: float = 0.5) -> None:
        self.bookmark_interval_s = bookmark_interval_s
        self.metrics_installed = True
        self.requests: list[Received] = []
        # The next this many requests get 500 (an API server in trouble).
        self.fail_requests = 0
        # Pod names whose eviction a PodDisruptionBudget forbids (429).
        self.refused_evictions: set[str] = set()
        # False: a dry run passes them (the budget changes between a check and the eviction).
        self.refuse_dry_runs = True
        # Called (outside the lock) after a pod is evicted: a test's "ReplicaSet".
        self.on_evicted: Callable[[str, str], None] | None = None
        self._store = _Store()
        self._metrics: dict[tuple[str, str], Obj] = {}
        self._rollouts: dict[tuple[str, str], int] = {}  # deployments whose rollout advances
        self._cond = threading.Condition()
        self._watches: set[_Watch] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- life -------------------------------------------------------------------------------

    def start(self) -> str:
        fake = self

        class Handler(_Handler):
            api = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        self.cut_watches(abrupt=True)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig with one context, `fake`, pointing at this server with a token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "tester", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        return path

    # --- state, for tests -------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._store.resource_version

    def _write(self, resource: str, obj: Obj, kind: str | None = None) -> Obj:
        """Stores `obj` with a new resourceVersion and records the watch event."""
        meta = obj.setdefault("metadata", {})
        key = (resource, meta.setdefault("namespace", "default"), meta["name"])
        with self._cond:
            store = self._store
            store.resource_version += 1
            meta["resourceVersion"] = str(store.resource_version)
            meta.setdefault("uid", f"uid-{meta['name']}-{store.resource_version}")
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            event = kind or ("MODIFIED" if key in store.objects else "ADDED")
            if event == "DELETED":
                store.objects.pop(key, None)
            else:
                store.objects[key] = obj
            store.history.append((store.resource_version, resource, key[1], event, obj))
            self._cond.notify_all()
        return copy.deepcopy(obj)

    def _get(self, resource: str, namespace: str, name: str) -> Obj | None:
        with self._cond:
            obj = self._store.objects.get((resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def _delete(self, resource: str, namespace: str, name: str) -> bool:
        obj = self._get(resource, namespace, name)
        if obj is None:
            return False
        self._write(resource, obj, "DELETED")
        return True

    def put_slice(
        self,
        name: str,
        service: str,
        endpoints: list[Obj],
        *,
        ports: list[Obj] | None = None,
        namespace: str = "default",
    ) -> Obj:
        """Creates or replaces an EndpointSlice of `service` (build endpoints with `endpoint`)."""
        obj: Obj = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "grpc", "port": 50051, "protocol": "TCP"}]
            if ports is None
            else ports,
        }
        return self._write(SLICES, obj)

    def delete_slice(self, name: str, namespace: str = "default") -> bool:
        return self._delete(SLICES, namespace, name)

    def slices(self, namespace: str = "default") -> list[Obj]:
        with self._cond:
            return [
                copy.deepcopy(o)
                for (r, ns, _), o in self._store.objects.items()
                if r == SLICES and ns == namespace
            ]

    def put_pod(self, pod: Obj) -> Obj:
        return self._write(PODS, pod)

    def delete_pod(self, name: str, namespace: str = "default") -> bool:
        return self._delete(PODS, namespace, name)

    def pod(self, name: str, namespace: str = "default") -> Obj | None:
        return self._get(PODS, namespace, name)

    def put_deployment(self, deployment: Obj) -> Obj:
        return self._write(DEPLOYMENTS, deployment)

    def deployment(self, name: str, namespace: str = "default") -> Obj | None:
        return self._get(DEPLOYMENTS, namespace, name)

    def set_metrics(self, pod: str, *, cpu: str, memory: str, namespace: str = "default") -> None:
        """The PodMetrics metrics-server would report (one container, `app`)."""
        self._metrics[(namespace, pod)] = {
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": pod, "namespace": namespace, "labels": {}},
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "window": "15s",
            "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": memory}}],
        }

    def cut_watches(self, *, abrupt: bool = True) -> int:
        """Ends every open watch: `abrupt` drops the connection mid-stream (no final
        chunk), else the stream ends cleanly as a server timeout ends it. Returns how many."""
        with self._cond:
            for watch in self._watches:
                watch.cut = "abrupt" if abrupt else "clean"
            self._cond.notify_all()
            return len(self._watches)

    def open_watches(self) -> int:
        with self._cond:
            return len(self._watches)

    def compact(self) -> None:
        """Forgets the event history, as etcd compaction does: a watch resumed from an
        older resourceVersion gets 410 Gone. Open watches end (cleanly)."""
        with self._cond:
            self._store.compacted = self._store.resource_version + 1
            self._store.history.clear()
        self.cut_watches(abrupt=False)

    def received(self, method: str, pattern: str) -> list[Received]:
        return [r for r in list(self.requests) if r.method == method and re.search(pattern, r.path)]

    # --- the API ----------------------------------------------------------------------------

    def list_objects(self, resource: str, namespace: str, selector: dict[str, str]) -> Obj:
        api_version, kind = _KINDS[resource]
        with self._cond:
            items = [
                copy.deepcopy(o)
                for (r, ns, _), o in sorted(self._store.objects.items())
                if r == resource and ns == namespace and _matches(o, selector)
            ]
            rv = self._store.resource_version
        return {
            "apiVersion": api_version,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    def watch_events(
        self, watch: _Watch, since: int, bookmarks: bool, timeout_s: float
    ) -> Iterator[Obj | None]:
        """Yields watch events after `since`; None when the stream must end abruptly."""
        api_version, kind = _KINDS[watch.resource]
        with self._cond:
            if since < self._store.compacted:
                yield {"type": "ERROR", "object": _status(
                    410, "Expired",
                    f"too old resource version: {since} ({self._store.compacted})")}  # fmt: skip
                return
            self._watches.add(watch)
        deadline = time.monotonic() + timeout_s
        next_bookmark = time.monotonic() + self.bookmark_interval_s
        try:
            while True:
                with self._cond:
                    pending = self._pending(watch, since)
                    while (
                        not pending
                        and watch.cut is None
                        and time.monotonic() < min(deadline, next_bookmark)
                    ):
                        self._cond.wait(min(deadline, next_bookmark) - time.monotonic())
                        pending = self._pending(watch, since)
                    current = self._store.resource_version
                    cut = watch.cut
                for rv, event, obj in pending:
                    since = rv
                    yield {"type": event, "object": obj}
                if cut == "abrupt":
                    yield None
                    return
                if cut == "clean" or time.monotonic() >= deadline:
                    return
                if bookmarks and time.monotonic() >= next_bookmark:
                    since = max(since, current)
                    yield {"type": "BOOKMARK", "object": {
                        "apiVersion": api_version, "kind": kind,
                        "metadata": {"resourceVersion": str(since)}}}  # fmt: skip
                if time.monotonic() >= next_bookmark:
                    next_bookmark = time.monotonic() + self.bookmark_interval_s
        finally:
            with self._cond:
                self._watches.discard(watch)

    def _pending(self, watch: _Watch, since: int) -> list[tuple[int, str, Obj]]:
        return [
            (rv, event, copy.deepcopy(obj))
            for rv, resource, ns, event, obj in self._store.history
            if rv > since
            and resource == watch.resource
            and ns == watch.namespace
            and _matches(obj, watch.selector)
        ]

    def evict(self, namespace: str, name: str, *, dry_run: bool = False) -> tuple[int, Obj]:
        """An eviction; `dry_run` (?dryRun=All) answers the same without evicting."""
        if self._get(PODS, namespace, name) is None:
            return 404, _status(404, "NotFound", f'pods "{name}" not found')
        if name in self.refused_evictions and (self.refuse_dry_runs or not dry_run):
            return 429, _status(
                429, "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.")  # fmt: skip
        if dry_run:
            return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                         "status": "Success", "code": 201}  # fmt: skip
        self.delete_pod(name, namespace)
        if self.on_evicted is not None:
            self.on_evicted(namespace, name)
        return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "code": 201}  # fmt: skip

    def patch_deployment(self, namespace: str, name: str, patch: Obj) -> tuple[int, Obj]:
        current = self._get(DEPLOYMENTS, namespace, name)
        if current is None:
            return 404, _status(404, "NotFound", f'deployments.apps "{name}" not found')
        patched = merge_patch(current, patch)
        if patched.get("spec") != current.get("spec"):
            meta = patched["metadata"]
            meta["generation"] = int(meta.get("generation", 1)) + 1
            if patched["spec"].get("template") != current["spec"].get("template"):
                self._rollouts[(namespace, name)] = 0
        return 200, self._write(DEPLOYMENTS, patched)

    def read_deployment(self, namespace: str, name: str) -> tuple[int, Obj]:
        """The deployment; a rollout in progress advances one step per read."""
        current = self._get(DEPLOYMENTS, namespace, name)
        if current is None:
            return 404, _status(404, "NotFound", f'deployments.apps "{name}" not found')
        key = (namespace, name)
        if key in self._rollouts:
            current = self._write(DEPLOYMENTS, self._advance(current, key))
        return 200, current

    def _advance(self, deployment: Obj, key: tuple[str, str]) -> Obj:
        """One controller step (maxSurge 1): observe the generation, then one updated pod
        per read, then the last old pod terminating, then done."""
        step = self._rollouts[key] = self._rollouts[key] + 1
        replicas = int(deployment["spec"].get("replicas", 1))
        surging = step <= replicas + 1
        status = deployment.setdefault("status", {})
        status["observedGeneration"] = deployment["metadata"]["generation"]
        status["replicas"] = replicas + (1 if surging else 0)
        status["updatedReplicas"] = min(step - 1, replicas)
        status["readyReplicas"] = status["availableReplicas"] = replicas - (1 if surging else 0)
        if not surging:
            del self._rollouts[key]
        return deployment

    def scale(self, namespace: str, name: str, replicas: int | None) -> tuple[int, Obj]:
        current = self._get(DEPLOYMENTS, namespace, name)
        if current is None:
            return 404, _status(404, "NotFound", f'deployments.apps "{name}" not found')
        if replicas is not None:
            if replicas < 0:
                return 422, _status(422, "Invalid", "spec.replicas: must be >= 0")
            current["spec"]["replicas"] = replicas
            current = self._write(DEPLOYMENTS, current)
        return 200, {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {"name": name, "namespace": namespace,
                         "resourceVersion": current["metadata"]["resourceVersion"]},
            "spec": {"replicas": current["spec"].get("replicas", 1)},
            "status": {"replicas": current.get("status", {}).get("replicas", 0),
                       "selector": "app=" + name},
        }  # fmt: skip

    def pod_metrics(self, namespace: str, name: str | None) -> tuple[int, Obj]:
        if not self.metrics_installed:
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if name is not None:
            found = self._metrics.get((namespace, name))
            if found is None:
                return 404, _status(
                    404, "NotFound", f'podmetrics.metrics.k8s.io "{name}" not found'
                )
            return 200, copy.deepcopy(found)
        items = [
            copy.deepcopy(m) for (ns, _), m in sorted(self._metrics.items()) if ns == namespace
        ]
        return 200, {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                     "metadata": {}, "items": items}  # fmt: skip


_ROUTES: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern))
    for name, pattern in (
        ("slices", r"^/apis/discovery\.k8s\.io/v1/namespaces/([^/]+)/endpointslices$"),
        ("pods", r"^/api/v1/namespaces/([^/]+)/pods$"),
        ("pod", r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$"),
        ("eviction", r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction$"),
        ("scale", r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)/scale$"),
        ("deployment", r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$"),
        ("metrics", r"^/apis/metrics\.k8s\.io/v1beta1/namespaces/([^/]+)/pods$"),
        ("metric", r"^/apis/metrics\.k8s\.io/v1beta1/namespaces/([^/]+)/pods/([^/]+)$"),
    )
]


class _Handler(BaseHTTPRequestHandler):
    api: FakeKubernetes
    protocol_version = "HTTP/1.1"  # keep-alive and chunked transfer, as the client expects

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests assert on `requests`, not on a log

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        content_type = self.headers.get("Content-Type")
        self.api.requests.append(Received(method, parts.path, query, content_type, body))
        if self.api.fail_requests > 0:
            self.api.fail_requests -= 1
            self._json(500, _status(500, "InternalError", "etcdserver: request timed out"))
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._json(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        for name, pattern in _ROUTES:
            if match := pattern.match(parts.path):
                self._route(name, method, match.groups(), query, body, content_type)
                return
        self._json(
            404, _status(404, "NotFound", "the server could not find the requested resource")
        )

    def _route(
        self,
        name: str,
        method: str,
        args: tuple[str, ...],
        query: dict[str, str],
        body: Any,
        content_type: str | None,
    ) -> None:
        api = self.api
        try:
            selector = _parse_selector(query.get("labelSelector", ""))
        except ValueError as err:
            self._json(400, _status(400, "BadRequest", str(err)))
            return
        if name in ("slices", "pods") and method == "GET":
            resource = SLICES if name == "slices" else PODS
            if query.get("watch") in ("true", "1"):
                self._watch(_Watch(resource, args[0], selector), query)
            else:
                self._json(200, api.list_objects(resource, args[0], selector))
        elif name == "pod" and method == "GET":
            pod = api.pod(args[1], args[0])
            self._json(*((200, pod) if pod else (404, _status(
                404, "NotFound", f'pods "{args[1]}" not found'))))  # fmt: skip
        elif name == "eviction" and method == "POST":
            self._json(*api.evict(args[0], args[1], dry_run=query.get("dryRun") == "All"))
        elif name == "deployment" and method == "GET":
            self._json(*api.read_deployment(args[0], args[1]))
        elif name == "deployment" and method == "PATCH":
            if content_type not in ("application/strategic-merge-patch+json",
                                    "application/merge-patch+json"):  # fmt: skip
                self._json(415, _status(415, "UnsupportedMediaType", f"{content_type}"))
                return
            self._json(*api.patch_deployment(args[0], args[1], body))
        elif name == "scale" and method in ("GET", "PATCH", "PUT"):
            replicas = (body or {}).get("spec", {}).get("replicas") if method != "GET" else None
            self._json(*api.scale(args[0], args[1], replicas))
        elif name in ("metrics", "metric") and method == "GET":
            self._json(*api.pod_metrics(args[0], args[1] if len(args) > 1 else None))
        else:
            self._json(405, _status(405, "MethodNotAllowed", f"{method} is not allowed here"))

    def _json(self, code: int, obj: Obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _watch(self, watch: _Watch, query: dict[str, str]) -> None:
        since = int(query.get("resourceVersion") or 0) or self.api.resource_version
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout_s = float(query.get("timeoutSeconds") or 1800)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in self.api.watch_events(watch, since, bookmarks, timeout_s):
                if event is None:  # a cut: drop the connection with no final chunk
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self._chunk(json.dumps(event).encode() + b"\n")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def endpoint(
    ip: str,
    pod: str | None,
    *,
    ready: bool = True,
    serving: bool | None = None,
    terminating: bool = False,
    namespace: str = "default",
) -> Obj:
    """One EndpointSlice endpoint, as the EndpointSlice controller writes it."""
    ep: Obj = {
        "addresses": [ip],
        "conditions": {
            "ready": ready,
            "serving": ready if serving is None else serving,
            "terminating": terminating,
        },
        "nodeName": "node-1",
    }
    if pod is not None:
        ep["targetRef"] = {"kind": "Pod", "name": pod, "namespace": namespace, "uid": f"uid-{pod}"}
    return ep
