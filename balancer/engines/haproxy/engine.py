"""The HAProxy engine: Ballast's cluster state carried out by a supervised HAProxy child.

The config file is written from a model once per process; afterwards the
runtime API changes servers in place, level-triggered: every cluster
notification marks the engine dirty, and one task compares what each backend
should hold (from the clusters) with what was applied, and sends the
difference (`add server`, `set server … weight|state`, `del server`). A fresh
process (start, crash, policy change) is written with the current servers, so
it needs no catching up and no call finds an empty backend.

Endpoint state → HAProxy server: READY (or routed to in panic) → `state ready`
with its weight; DRAINING/DRAINED → `state drain` (streams in flight finish, no
new ones); PENDING/UNHEALTHY/EJECTED → `state maint`. Weights (slow start's ramp
included) are mapped onto 0–256 by `config.haproxy_weight`. A drain holds the
endpoint DRAINING until `show stat` says the server has no session; the drain
timeout runs `shutdown sessions server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from balancer.cluster import Clock, Cluster
from balancer.config import BalancerConfig, parse_address
from balancer.endpoint import Endpoint, State, StateChange
from balancer.engines.base import EngineFigures
from balancer.engines.haproxy import calls
from balancer.engines.haproxy.config import (
    BALANCE,
    Server,
    backend_name,
    haproxy_weight,
    render,
    server_options,
    unenforced_limits,
    write_tls_files,
)
from balancer.engines.haproxy.counts import ServedCounts
from balancer.engines.haproxy.process import HaproxyProcess, StartFailed, find_binary
from balancer.engines.haproxy.runtime import (
    CommandFailed,
    RuntimeApi,
    RuntimeDown,
    ServerStat,
    parse_peers,
)
from balancer.listen import cannot_listen

log = logging.getLogger(__name__)

_POLL_INTERVAL_S = 0.2
# How often in-flight streams per server are read from `show stat` for snapshots.
_STATS_INTERVAL_S = 1.0
_START_TIMEOUT_S = 15.0
# How long `stop` waits for its cancelled tasks before stopping the processes anyway.
_TASKS_STOP_S = 5.0
_RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_DRAINING = (State.DRAINING, State.DRAINED)
# Errors of one server held between two `show stat` reads for outlier detection (more
# than any consecutive-failures threshold needs).
_PENDING_FAILURES = 256


def wanted_admin(ep: Endpoint) -> str:
    """The HAProxy admin state for an endpoint's state: ready, drain or maint."""
    if ep.state in _DRAINING:
        return "drain"
    if ep.state is State.READY or ep.effective_weight > 0:  # READY, or served in panic
        return "ready"
    return "maint"


class _Hold:
    """Stands in a DRAINING endpoint's calls for all of HAProxy's sessions on its server,
    so the endpoint stays DRAINING until they end; `cancel` (the drain timeout) ends them."""

    def __init__(self, engine: HaproxyEngine, cluster: str, endpoint_id: str) -> None:
        self._engine = engine
        self._cluster = cluster
        self._endpoint_id = endpoint_id

    def cancel(self) -> bool:
        self._engine.shutdown_sessions(self._cluster, self._endpoint_id)
        return True


class HaproxyEngine:
    """The `Engine` that runs HAProxy as a child and drives it over the runtime API."""

    name = "haproxy"

    def __init__(
        self,
        config: BalancerConfig,
        clusters: Mapping[str, Cluster],
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        """Raises EngineUnavailable when the HAProxy binary is missing."""
        self._config = config
        self._clusters = clusters
        self._clock = clock
        self._binary = find_binary(config.haproxy.binary)
        self._backends = {c.name: backend_name(i, c.name) for i, c in enumerate(config.clusters)}
        self._listen: list[str] = []
        self._dir = ""
        self._config_file = ""
        self._call_log_path = ""
        self._latency_log_path = ""
        self._api = RuntimeApi("")
        self._process: HaproxyProcess | None = None
        self._retiring: set[HaproxyProcess] = set()
        # Set when a reload's new process is installed (or its start failed), by the old one.
        self._handovers: dict[HaproxyProcess, asyncio.Event] = {}
        # What the running process holds: per cluster, endpoint id → server.
        self._applied: dict[str, dict[str, Server]] = {c: {} for c in clusters}
        self._deleting: dict[str, set[str]] = {c: set() for c in clusters}
        self._policies: dict[str, str] = {}
        self._names: dict[tuple[str, str, str], str] = {}
        # (backend, server name) → (cluster, endpoint id), for the call log.
        self._by_server: dict[tuple[str, str], tuple[str, str]] = {}
        self._in_flight: dict[tuple[str, str], int] = {}
        self._call_log: asyncio.Server | None = None
        self._latency_log: asyncio.DatagramTransport | None = None
        self._counts = ServedCounts()
        # Per (backend, server): errors since the last `show stat` read (code, latency).
        self._failures: dict[tuple[str, str], deque[tuple[int, float]]] = {}
        self._stats_read_at = 0.0
        self._serial = itertools.count(1)
        self._holds: dict[tuple[str, str], _Hold] = {}
        self._dirty: asyncio.Event | None = None
        self._up = False
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned_peak_ewma: set[str] = set()
        # Per cluster, the options of its servers (TLS, maxconn): in the file and `add server`.
        self._server_options: dict[str, str] = {}
        self._peers: dict[str, int] = {}
        self.restarts = 0
        if warning := unenforced_limits(config):
            log.warning("%s", warning)

    # --- lifecycle ----------------------------------------------------------------------------

    def bind(self) -> Sequence[str]:
        """Checks each listener's address is free (port 0 → a free port picked now) and
        returns them; HAProxy binds them when it starts."""
        self._listen = [_free_address(lc.address) for lc in self._config.listeners]
        return list(self._listen)

    async def start(self) -> None:
        """Writes the config, starts HAProxy and waits for its runtime API; raises
        StartFailed (HAProxy's last words) when it exits or does not answer."""
        self._stopping = False
        self._dir = tempfile.mkdtemp(prefix="ballast-haproxy-")
        socket_path = self._config.haproxy.runtime_socket or os.path.join(self._dir, "runtime.sock")
        self._api = RuntimeApi(socket_path)
        self._config_file = os.path.join(self._dir, "haproxy.cfg")
        self._call_log_path = os.path.join(self._dir, "calls.sock")
        self._latency_log_path = os.path.join(self._dir, "latency.sock")
        write_tls_files(self._config, self._dir)  # the private dir: 0700, files 0600
        self._server_options = {
            c.name: server_options(self._config, i, self._dir)
            for i, c in enumerate(self._config.clusters)
        }
        self._call_log = await calls.listen_stream(self._call_log_path, self._record_error)
        self._latency_log = await calls.listen(self._latency_log_path, self._record_sample)
        self._dirty = asyncio.Event()
        await self._launch(replaces=None)
        # States that changed while HAProxy started are applied before calls are taken.
        self._dirty.clear()
        await self._reconcile()
        for work in (self._supervise(), self._reconcile_forever(), self._poll_forever()):
            self._spawn(work)

    async def stop(self, grace_s: float) -> None:
        """Soft-stops HAProxy (streams get `grace_s`, then hard stop) and cleans up."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        try:
            # Bounded, and whatever a task ended with: the processes are stopped below in
            # any case, so no HAProxy outlives the engine holding its ports. (Python 3.11's
            # wait_for can lose a cancel that lands as its inner call completes; the loops
            # also end on `_stopping`.)
            _, pending = await asyncio.wait(tasks, timeout=_TASKS_STOP_S) if tasks else ((), ())
            for task in pending:
                log.error("haproxy engine: %r did not stop when cancelled", task)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("haproxy engine: %r had failed: %r", task, task.exception())
        finally:
            processes = [p for p in (self._process, *self._retiring) if p is not None]
            await asyncio.gather(*(p.stop(grace_s) for p in processes))
        self._up = False
        if self._latency_log is not None:
            self._latency_log.close()
        if self._call_log is not None:
            self._call_log.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def runtime_dir(self) -> str:
        """The engine's private directory (mode 0700: config, sockets, certificate + key
        files); "" before start, removed at stop."""
        return self._dir

    @property
    def pid(self) -> int | None:
        """The pid of the HAProxy process carrying new calls; None before start."""
        return None if self._process is None else self._process.pid

    # --- notifications from the clusters ------------------------------------------------------

    def cluster_changed(self, cluster: Cluster) -> None:
        if self._dirty is not None:
            self._dirty.set()

    def endpoint_changed(self, cluster: Cluster, change: StateChange) -> None:
        key = (cluster.name, change.endpoint_id)
        ep = cluster.endpoints.get(change.endpoint_id)
        if change.new is State.DRAINING and key not in self._holds and ep is not None:
            if change.endpoint_id in self._applied[cluster.name]:  # it may have sessions
                hold = _Hold(self, cluster.name, change.endpoint_id)
                self._holds[key] = hold
                ep.begin(hold)
        elif change.old is State.DRAINING and change.new is not State.DRAINED:
            self._release(cluster, change.endpoint_id)  # undrained while draining

    def _release(self, cluster: Cluster, endpoint_id: str) -> None:
        hold = self._holds.pop((cluster.name, endpoint_id), None)
        ep = cluster.endpoints.get(endpoint_id)
        if hold is not None and ep is not None:
            ep.finish(hold, self._clock())  # DRAINING → DRAINED when it was the last

    def shutdown_sessions(self, cluster: str, endpoint_id: str) -> None:
        """The drain timeout: ends HAProxy's sessions on the endpoint's server."""
        server = self._applied[cluster].get(endpoint_id)
        if server is None:
            return
        command = f"shutdown sessions server {self._backends[cluster]}/{server.name}"
        self._spawn(self._quietly(command))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs `work` until it ends or `stop` cancels it; finished tasks are let go."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, command: str) -> None:
        try:
            await self._api.command(command)
        except RuntimeDown as err:
            log.warning("%s", err)

    # --- figures ------------------------------------------------------------------------------

    def connections_by_peer(self) -> Mapping[str, int]:
        """Client connections by peer IP, from the listeners' stick tables (read every
        second with the in-flight figures)."""
        return dict(self._peers)

    def figures(self) -> EngineFigures:
        return EngineFigures(name=self.name, up=self._up, in_flight=dict(self._in_flight))

    def _endpoint(self, backend: str, server: str) -> tuple[Cluster, Endpoint] | None:
        where = self._by_server.get((backend, server))
        if where is None:
            return None
        cluster = self._clusters[where[0]]
        ep = cluster.endpoints.get(where[1])
        return None if ep is None else (cluster, ep)

    def _record_error(self, call: calls.CallRecord) -> None:
        """A call from HAProxy's error log: counted by its code now; outlier detection
        hears of it at the next `show stat` read (`_take`)."""
        if call.code == calls.OK:
            return  # logged for a retry or HAProxy ending it: `show stat` counts it as OK
        found = self._endpoint(call.backend, call.server)
        if found is None:
            return
        key = (call.backend, call.server)
        self._counts.not_ok(*key)
        if self._config.record_stats:
            found[1].stats.count(call.code)
        pending = self._failures.get(key)
        if pending is None:
            pending = self._failures[key] = deque(maxlen=_PENDING_FAILURES)
        pending.append((call.code, call.latency_s))

    def _record_sample(self, call: calls.CallRecord) -> None:
        """A call from the latency log (one in `LATENCY_SAMPLE`): its latency stands for
        that many calls' in the histogram; an OK one also feeds the load estimate."""
        found = self._endpoint(call.backend, call.server)
        if found is None:
            return
        cluster, ep = found
        if self._config.record_stats:
            ep.stats.sample_latency(call.latency_s, calls.LATENCY_SAMPLE)
        if call.code == calls.OK:
            cluster.record_result(ep, calls.OK, call.latency_s)

    # --- the process --------------------------------------------------------------------------

    async def _launch(self, replaces: int | None) -> None:
        """Starts a process written with the current state; it replaces `replaces`."""
        policies = {name: cluster.policy for name, cluster in self._clusters.items()}
        self._warn_peak_ewma(policies)
        wanted = {name: self._wanted(cluster) for name, cluster in self._clusters.items()}
        self._forget_gone(wanted)
        text = render(
            self._config,
            listen_addresses=self._listen,
            runtime_socket=self._api.path,
            policies=policies,
            servers={name: list(servers.values()) for name, servers in wanted.items()},
            call_log=self._call_log_path,
            latency_log=self._latency_log_path,
            tls_dir=self._dir,
        )
        _write_atomically(self._config_file, text)  # a few KiB on a local disk
        process = await HaproxyProcess.spawn(self._binary, self._config_file, replaces=replaces)
        try:
            await self._wait_ready(process)
        except asyncio.CancelledError:
            # Stopped while it started: it is nobody's yet, so it is stopped here.
            await asyncio.shield(process.stop(0))
            raise
        self._process = process
        self._policies = policies
        # As written: drain and maint are both `disabled` in the file.
        self._applied = {
            name: {i: s if s.admin == "ready" else replace(s, admin="maint") for i, s in ws.items()}
            for name, ws in wanted.items()
        }
        self._deleting = {name: set() for name in self._clusters}
        # A new process counts from 0.
        self._counts.reset()
        self._failures.clear()
        self._up = True
        assert self._dirty is not None
        self._dirty.set()
        log.info("haproxy running (pid %d), listening on %s", process.pid, ", ".join(self._listen))

    async def _wait_ready(self, process: HaproxyProcess) -> None:
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while asyncio.get_running_loop().time() < deadline:
            if process.returncode is not None:
                await process.wait()
                raise StartFailed(
                    f"haproxy exited with code {process.returncode}: {process.last_words()}"
                )
            with contextlib.suppress(RuntimeDown):
                if f"Pid: {process.pid}\n" in await self._api.command("show info"):
                    return
            await asyncio.sleep(0.05)
        await process.stop(0)
        raise StartFailed(f"haproxy did not answer on {self._api.path} in {_START_TIMEOUT_S:g} s")

    async def _supervise(self) -> None:
        """Restarts HAProxy with the current state whenever it dies; the engine is down
        meanwhile."""
        while True:
            process = self._process
            assert process is not None
            code = await process.wait()
            if self._stopping:
                return  # a cancel can be lost (3.11's wait_for): never restart after stop
            if process is not self._process:
                continue  # replaced on purpose (policy change); the new one is watched
            handover = self._handovers.get(process)
            if handover is not None:
                # Its successor took over (`-sf`) before `_launch` installed it: wait for
                # that, rather than start yet another HAProxy beside the successor.
                await handover.wait()
                continue
            self._up = False
            log.error(
                "haproxy (pid %d) exited with code %s: the engine is down; restarting it"
                " with the current state",
                process.pid, code,
            )  # fmt: skip
            await self._restart()

    async def _restart(self) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(_RESTART_BACKOFF_S[min(attempt, len(_RESTART_BACKOFF_S) - 1)])
            try:
                await self._launch(replaces=None)
            except (StartFailed, OSError) as err:
                log.error("haproxy restart failed (%s); trying again", err)
                continue
            self.restarts += 1
            log.warning("haproxy restarted: the engine is up again")
            return

    async def _reload(self) -> None:
        """A policy changed: HAProxy has no runtime command for the balance algorithm, so a
        new process written with it takes over the listeners (`-sf`); the old one's
        streams finish there."""
        old = self._process
        assert old is not None
        handover = self._handovers[old] = asyncio.Event()  # its exit is expected now
        try:
            await self._launch(replaces=old.pid)
        finally:
            # Installed, or not replaced (then if it died, the supervisor restarts it).
            del self._handovers[old]
            handover.set()
        self._retiring.add(old)
        self._spawn(self._reap(old))

    async def _reap(self, process: HaproxyProcess) -> None:
        await process.wait()
        self._retiring.discard(process)

    def _forget_gone(self, wanted: Mapping[str, Mapping[str, Server]]) -> None:
        """Keeps server names only for endpoints that still exist (a fresh process holds
        only those), so churn over a long life does not pile up names."""
        live = {(c, i, s.target) for c, servers in wanted.items() for i, s in servers.items()}
        self._names = {k: v for k, v in self._names.items() if k in live}
        self._by_server = {
            (self._backends[c], s.name): (c, i)
            for c, servers in wanted.items()
            for i, s in servers.items()
        }

    def _warn_peak_ewma(self, policies: Mapping[str, str]) -> None:
        for name, policy in policies.items():
            if policy == "peak_ewma" and name not in self._warned_peak_ewma:
                self._warned_peak_ewma.add(name)
                log.warning(
                    "cluster %s: peak_ewma runs as HAProxy's random(2) (power of two choices"
                    " on in-flight streams): HAProxy has no latency-aware policy",
                    name,
                )

    # --- reconciling --------------------------------------------------------------------------

    def _wanted(self, cluster: Cluster) -> dict[str, Server]:
        """What the cluster's backend should hold now, by endpoint id."""
        endpoints = list(cluster.endpoints.values())
        top = max((ep.effective_weight for ep in endpoints), default=0.0)
        return {
            ep.id: Server(
                name=self._name(cluster.name, ep),
                target=ep.address.target,
                admin=wanted_admin(ep),
                weight=haproxy_weight(ep.effective_weight, top),
            )
            for ep in endpoints
        }

    def _name(self, cluster: str, ep: Endpoint) -> str:
        key = (cluster, ep.id, ep.address.target)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = f"s{next(self._serial)}"
            self._by_server[(self._backends[cluster], name)] = (cluster, ep.id)
        return name

    async def _reconcile_forever(self) -> None:
        assert self._dirty is not None
        while not self._stopping:
            await self._dirty.wait()
            self._dirty.clear()
            if not self._up:
                continue  # the relaunch writes the current state and marks dirty again
            try:
                await self._reconcile()
            except StartFailed as err:
                log.error("haproxy: the new policy's process did not start (%s)", err)
                self._policies = {n: c.policy for n, c in self._clusters.items()}
            except RuntimeDown as err:
                log.warning("%s; retrying", err)
                await asyncio.sleep(_POLL_INTERVAL_S)
                self._dirty.set()

    async def _reconcile(self) -> None:
        current = {name: cluster.policy for name, cluster in self._clusters.items()}
        if current != self._policies:
            await self._reload()
            return
        for name, cluster in self._clusters.items():
            await self._reconcile_cluster(name, self._wanted(cluster))

    async def _reconcile_cluster(self, cluster: str, wanted: dict[str, Server]) -> None:
        have = self._applied[cluster]
        backend = self._backends[cluster]
        for endpoint_id, old in list(have.items()):
            gone = wanted.get(endpoint_id)
            if gone is None or gone.name != old.name:  # gone, or moved to another address
                del have[endpoint_id]
                await self._retire(cluster, old)
        for endpoint_id, want in wanted.items():
            server = have.get(endpoint_id)
            if server is None:
                server = await self._add(backend, want, self._server_options[cluster])
                have[endpoint_id] = server
            await self._update(backend, server, want)
            have[endpoint_id] = want
        await self._delete_retired(cluster)

    async def _add(self, backend: str, want: Server, options: str) -> Server:
        await self._try(
            f"add server {backend}/{want.name} {want.target} {options} weight {want.weight}",
            "New server registered.",
        )
        return replace(want, admin="maint")  # a new dynamic server starts in maintenance

    async def _update(self, backend: str, server: Server, want: Server) -> None:
        where = f"{backend}/{server.name}"
        if server.weight != want.weight:
            await self._try(f"set server {where} weight {want.weight}")
        if server.admin != want.admin:
            await self._try(f"set server {where} state {want.admin}")

    async def _retire(self, cluster: str, server: Server) -> None:
        await self._try(f"set server {self._backends[cluster]}/{server.name} state maint")
        self._deleting[cluster].add(server.name)
        self._names = {k: v for k, v in self._names.items() if v != server.name}

    async def _delete_retired(self, cluster: str) -> None:
        """`del server` for retired servers; one with connections (idle ones included)
        stays until they are gone, and is tried again on the next pass. Its last OK
        calls and bytes are counted first (its counters go with it)."""
        if not self._deleting[cluster]:
            return
        backend = self._backends[cluster]
        stats = await self._api.server_stats(backend)
        for name in sorted(self._deleting[cluster]):
            stat = stats.get(name)
            if stat is not None and stat.sessions_now == 0:
                self._take([stat], {}, final=True)
            reply = await self._api.command(f"del server {backend}/{name}")
            if "Server deleted." in reply or "No such server" in reply:
                self._deleting[cluster].discard(name)
                self._by_server.pop((backend, name), None)
                self._counts.forget(backend, name)

    async def _try(self, command: str, success: str = "") -> None:
        try:
            await self._api.expect(command, success)
        except CommandFailed as err:
            log.warning("%s", err)

    # --- drain progress -----------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_POLL_INTERVAL_S)
            if not self._up:
                continue
            with contextlib.suppress(RuntimeDown):
                await self._poll_drains()
                for cluster in self._clusters:
                    await self._delete_retired(cluster)
                now = asyncio.get_running_loop().time()
                if now - self._stats_read_at >= _STATS_INTERVAL_S:
                    self._stats_read_at = now
                    await self._read_stats()
                    await self._read_peers()

    async def _read_stats(self) -> None:
        """Streams in flight per endpoint (`show stat`'s current sessions), OK calls and
        bytes since the previous read, and outlier detection's news."""
        in_flight: dict[tuple[str, str], int] = {}
        for backend in self._backends.values():
            stats = await self._api.server_stats(backend)
            self._take(stats.values(), in_flight)
        self._in_flight = in_flight

    def _take(
        self,
        stats: Iterable[ServerStat],
        in_flight: dict[tuple[str, str], int],
        final: bool = False,
    ) -> None:
        for stat in stats:
            key = (stat.backend, stat.server)
            increments = self._counts.update(stat, final=final)
            failures = self._failures.pop(key, ())
            found = self._endpoint(*key)
            if found is None:
                continue
            cluster, ep = found
            where = (cluster.name, ep.id)
            in_flight[where] = in_flight.get(where, 0) + stat.sessions_now
            if self._config.record_stats:
                ep.stats.count(calls.OK, increments.ok_calls)
                ep.stats.bytes_received += increments.bytes_in
                ep.stats.bytes_sent += increments.bytes_out
            _feed_outliers(cluster, ep, failures, increments.ok_in_period, stat.avg_time_ms)

    async def _read_peers(self) -> None:
        """Client connections per peer IP, summed over the listeners' stick tables."""
        peers: dict[str, int] = {}
        for index in range(len(self._listen)):
            for peer, count in parse_peers(await self._api.command(f"show table listener{index}")):
                peers[peer] = peers.get(peer, 0) + count
        self._peers = peers

    async def _poll_drains(self) -> None:
        """Ends holds of servers HAProxy reports with no session (DRAINING → DRAINED)."""
        for cluster_name in sorted({c for c, _ in self._holds}):
            stats = await self._api.server_stats(self._backends[cluster_name])
            cluster = self._clusters[cluster_name]
            for c, endpoint_id in [k for k in self._holds if k[0] == cluster_name]:
                server = self._applied[c].get(endpoint_id)
                if server is not None and server.admin == "ready":
                    continue  # the drain is not applied yet
                stat = stats.get(server.name) if server is not None else None
                if stat is None or stat.sessions_now == 0:
                    self._release(cluster, endpoint_id)


def _feed_outliers(
    cluster: Cluster,
    ep: Endpoint,
    failures: Iterable[tuple[int, float]],
    ok_calls: int,
    avg_time_ms: int,
) -> None:
    """Outlier detection from one read's news: without the calls' order, a read whose
    period also ended OK calls resets the endpoint's consecutive failures (its errors
    were not consecutive, as far as can be told); otherwise its errors continue the run.
    So an endpoint that fails every call is ejected up to one read later than under the
    embedded engine, and one that fails some of its calls is never ejected for a run
    that OK calls broke."""
    if ok_calls:
        cluster.record_result(ep, calls.OK, avg_time_ms / 1000)
        return
    for code, latency_s in failures:
        cluster.record_result(ep, code, latency_s)


def _write_atomically(path: str, text: str) -> None:
    partial = Path(path + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _free_address(address: str) -> str:
    """`address` with port 0 replaced by a port free now; raises ListenError when the
    address cannot be bound (in use, or not an address of this machine)."""
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            raise cannot_listen(address, "listener") from None
        port = probe.getsockname()[1]
    return f"{address.rpartition(':')[0]}:{port}"


__all__ = ["BALANCE", "HaproxyEngine", "wanted_admin"]
