"""The collector's network part: snapshot streams and pod facts in, one frame per service out.

One task per balancer replica follows its `WatchSnapshots` stream and turns
each snapshot into rates; one task polls the platform for pod facts and then
scrapes every pod's /metrics (all at once) for the rates the pods report; a ticker
builds a frame per service every interval, keeps it in the history and hands
it to the `publish` sink. A replica that goes away is shown as down and
retried at least once a second; a failing platform call or publish is logged and
tried again on the next round. Nothing here stops the collector but `stop()`.

Plain asyncio + grpcio, no Django: the dashboard passes in the sink (a Channels
group send) and, when it shares a process with one, the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import grpc
import grpc.aio

from balancer.admin.v1 import admin_pb2, admin_pb2_grpc
from balancer.lifecycle import ShutdownTrigger, every, serve_until
from balancer.tls import ClientTls, open_channel
from dashboard.collector.frames import (
    ColorBook,
    ReplicaFrame,
    ServiceFrame,
    XdsFrame,
    build_frame,
)
from dashboard.collector.history import FrameHistory
from dashboard.collector.imbalance import WINDOW_S, LoadWindow
from dashboard.collector.memory import MemoryTrends, oom_seconds
from dashboard.collector.pinning import (
    READ_INTERVAL_S,
    PinningReader,
    Whose,
    host_of,
    pinning_frame,
    slim,
    window_shares,
)
from dashboard.collector.rates import (
    EndpointKey,
    EndpointRates,
    RateTracker,
    cluster_retry_rates,
    merge,
    sample_from_snapshot,
)
from dashboard.collector.scrape import PodScraper
from dashboard.collector.xds import xds_frame
from platforms.base import Platform, PodFacts, UnknownDeployment

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.25
# A replica that comes back is seen within a second: a restart is when it may lack the
# desired state, and knocking at a down replica's admin port once a second costs nothing.
# The short first steps only spread out the retries of a blip.
DEFAULT_BACKOFF_S = (0.25, 0.5, 1.0)
MAX_BACKOFF_S = 1.0  # jitter included
# A stream that sends nothing for this many intervals (and at least STALL_MIN_S) is
# treated as broken: a half-open connection otherwise shows a frozen replica as up.
STALL_INTERVALS = 5
STALL_MIN_S = 5.0
# The pods' channelz is first read this long after the start, then every READ_INTERVAL_S.
FIRST_READ_S = 1.0
JITTER = 0.2  # each retry waits its backoff step ± 20 %, so replicas do not retry in step

Publish = Callable[[ServiceFrame], Awaitable[None]]
WallClock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class ReplicaTarget:
    """One balancer replica's admin API: its id in frames, `host:port`, and bearer token;
    `tls` when the admin API serves TLS (plaintext when None)."""

    id: str
    address: str
    token: str
    tls: ClientTls | None = None

    def __post_init__(self) -> None:
        if not self.id or not self.address:
            raise ValueError("a balancer replica needs an id and an admin address")
        if not self.token:
            raise ValueError(f"balancer replica {self.id!r}: the admin API needs a token")


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """Where a service's figures come from: the balancer cluster and the platform deployment."""

    cluster: str
    deployment: str


@dataclass(frozen=True)
class CollectorConfig:
    """What the collector watches and how often; validated on construction.

    `history_window_s` of frames are kept per service (15 minutes by default).
    A broken replica stream is retried after `backoff_s[0]`, then the next step,
    staying at the last one (± jitter, never over `MAX_BACKOFF_S`). Pod facts are
    polled, and pods' /metrics scraped, every `pods_interval_s`, but never more often
    than frames are sent.
    """

    replicas: Sequence[ReplicaTarget]
    services: Mapping[str, ServiceTarget]
    interval_s: float = 1.0
    history_window_s: float = 900.0
    backoff_s: Sequence[float] = DEFAULT_BACKOFF_S
    pods_interval_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.interval_s >= MIN_INTERVAL_S:
            raise ValueError(
                f"interval_s must be at least {MIN_INTERVAL_S} s (frames every 250 ms at most),"
                f" got {self.interval_s}"
            )
        if not self.history_window_s >= self.interval_s:
            raise ValueError("history_window_s must hold at least one interval")
        if not self.backoff_s or not all(s > 0 for s in self.backoff_s):
            raise ValueError("backoff_s must be one or more positive delays")
        if max(self.backoff_s) > MAX_BACKOFF_S:
            raise ValueError(
                f"backoff_s: each delay must be at most {MAX_BACKOFF_S:g} s, so a replica"
                f" that comes back is seen within a second; got {max(self.backoff_s):g}"
            )
        if not self.pods_interval_s > 0:
            raise ValueError("pods_interval_s must be positive")
        ids = [r.id for r in self.replicas]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"balancer replica ids must be unique: {', '.join(duplicates)}")
        object.__setattr__(self, "replicas", tuple(self.replicas))
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))
        object.__setattr__(self, "backoff_s", tuple(self.backoff_s))

    @property
    def interval_ms(self) -> int:
        return round(self.interval_s * 1000)

    @property
    def history_capacity(self) -> int:
        return math.ceil(self.history_window_s / self.interval_s)

    def backoff_step_s(self, attempt: int) -> float:
        """The delay before retry `attempt` (0-based), jitter not included."""
        return self.backoff_s[min(attempt, len(self.backoff_s) - 1)]


@dataclass
class _Replica:
    """What the collector knows of one replica right now."""

    target: ReplicaTarget
    up: bool = False
    tracker: RateTracker = field(default_factory=RateTracker)
    rates: Mapping[EndpointKey, EndpointRates] = field(default_factory=dict)
    snapshot: admin_pb2.Snapshot | None = None
    converged: bool | None = None  # holds the operator's desired state; None: not judged
    # The proxy's retries/s per cluster over the last interval (the clusters' own counters).
    retry_rates: Mapping[str, float] = field(default_factory=dict)

    def observe(self, snapshot: admin_pb2.Snapshot) -> None:
        self.up = True
        self.retry_rates = cluster_retry_rates(self.snapshot, snapshot)
        self.snapshot = snapshot
        rates = self.tracker.observe(sample_from_snapshot(snapshot))
        if rates is not None:
            self.rates = rates

    def mark_down(self) -> None:
        """Its figures go with it: a down replica's last rates would show as current."""
        self.up = False
        self.tracker.reset()
        self.rates = {}
        self.retry_rates = {}
        self.snapshot = None
        self.converged = None


class Collector:
    """Runs the replica streams, the pod poller and the frame ticker: `start()`, then `stop()`.

    `clock` gives the wall time frames are stamped with; `rng` jitters the
    retry delays. `history` holds every frame built; `platform` is None where
    the collector runs without one (a separate process): frames then have no
    pod facts and no pod-reported rates.
    """

    def __init__(
        self,
        config: CollectorConfig,
        publish: Publish,
        *,
        platform: Platform | None = None,
        clock: WallClock = time.time,
        rng: random.Random | None = None,
        history: FrameHistory | None = None,
    ) -> None:
        self.config = config
        self.history = history if history is not None else FrameHistory(config.history_capacity)
        self._publish = publish
        self._platform = platform
        self._clock = clock
        self._rng = rng or random.Random()
        self._replicas = {r.id: _Replica(r) for r in config.replicas}
        self._pods: dict[str, list[PodFacts]] = {}
        self._scraper = PodScraper(clock=clock)
        self.memory = MemoryTrends()  # each pod's memory trend: its predicted time to OOM
        self.pinning = PinningReader(clock=clock)  # the pods' client connections (channelz)
        # Imbalance is scored over WINDOW_S of frames (via Ballast, at the pods, bypassing).
        size = max(1, round(WINDOW_S / config.interval_s))
        self._windows = {
            s: (LoadWindow(size), LoadWindow(size), LoadWindow(size)) for s in config.services
        }
        self._colors = {s: ColorBook() for s in config.services}  # a pod's color for life
        self._tasks: list[asyncio.Task[None]] = []
        # Why publishing last failed; None while it works. A channel layer that is away
        # (Redis down) fails every tick: said once, and once more when it is back.
        self._publish_error: str | None = None
        self._watches: dict[str, asyncio.Task[None]] = {}  # per replica id, while running

    async def start(self) -> None:
        """Starts every task and returns; replicas come up as their streams connect."""
        if self._tasks:
            raise RuntimeError("the collector is already running")
        for replica in self._replicas.values():
            self._start_watch(replica)
        if self._platform is not None:
            self._tasks.append(asyncio.create_task(self._poll_pods(), name="collector pods"))
            self._tasks.append(
                asyncio.create_task(self._read_channelz(), name="collector channelz")
            )
        self._tasks.append(asyncio.create_task(self._tick_forever(), name="collector ticker"))

    async def stop(self) -> None:
        """Cancels every task and waits for them; the history stays.

        A task that swallowed its cancellation (a gRPC call finishing at the same
        moment) is cancelled again, so stop() always returns.
        """
        tasks, self._tasks = self._tasks, []
        tasks += self._watches.values()
        self._watches = {}
        while pending := [task for task in tasks if not task.done()]:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        await self.pinning.close()

    async def run(self, shutdown_trigger: ShutdownTrigger) -> None:
        """Runs until `shutdown_trigger` returns (or this is cancelled), then stops."""
        await serve_until(self, shutdown_trigger)

    def _start_watch(self, replica: _Replica) -> None:
        rid = replica.target.id
        task = asyncio.create_task(self._watch(replica), name=f"collector watch {rid}")
        self._watches[rid] = task

    def set_replicas(self, targets: Sequence[ReplicaTarget]) -> None:
        """Follows exactly `targets` from now on (replicas found by discovery come and go):
        a new one gets its stream (when running), one that left loses its stream and
        figures, one whose address changed starts again. Frames list them in this order."""
        wanted = {t.id: t for t in targets}
        for rid, replica in list(self._replicas.items()):
            if wanted.get(rid) != replica.target:
                del self._replicas[rid]
                task = self._watches.pop(rid, None)
                if task is not None:
                    task.cancel()
        running = bool(self._tasks)
        kept, self._replicas = self._replicas, {}
        for rid, target in wanted.items():
            self._replicas[rid] = kept.get(rid) or _Replica(target)
            if running and rid not in self._watches:
                self._start_watch(self._replicas[rid])
        self.config = replace(self.config, replicas=tuple(targets))

    @property
    def targets(self) -> tuple[ReplicaTarget, ...]:
        """The replicas followed now."""
        return tuple(r.target for r in self._replicas.values())

    @property
    def streaming(self) -> list[str]:
        """The ids of the replicas whose snapshot stream task runs now."""
        return sorted(rid for rid, task in self._watches.items() if not task.done())

    @property
    def lists_pods(self) -> bool:
        """Whether a platform gives this collector the pods."""
        return self._platform is not None

    def pods(self, deployment: str) -> list[PodFacts] | None:
        """The deployment's pods at the platform's last list; None before one (or without
        a platform)."""
        return self._pods.get(deployment)

    def replica_frames(self) -> list[ReplicaFrame]:
        """Every configured replica, whether its stream is up and whether it holds the
        desired state (`note_convergence`), in configuration order."""
        return [
            {"id": r.target.id, "up": r.up, "converged": r.converged}
            for r in self._replicas.values()
        ]

    def snapshots(self) -> dict[str, admin_pb2.Snapshot | None]:
        """The latest snapshot of every replica by id; None for one that is down."""
        return {rid: r.snapshot if r.up else None for rid, r in self._replicas.items()}

    def note_convergence(self, replica_id: str, converged: bool | None) -> None:
        """Records whether a replica holds the desired state (the reconciler judges);
        frames carry it. A replica that goes down loses its note."""
        replica = self._replicas.get(replica_id)
        if replica is not None and replica.up:
            replica.converged = converged

    def policy(self, cluster: str) -> str | None:
        """The cluster's policy as the first replica that is up reports it."""
        for replica in self._replicas.values():
            if replica.up and replica.snapshot is not None:
                for c in replica.snapshot.clusters:
                    if c.name == cluster:
                        return str(c.policy)
        return None

    def xds(self, cluster: str) -> XdsFrame:
        """The cluster's proxyless clients over the replicas that are up: each client
        follows one replica's xDS server, so the counts add up."""
        return xds_frame(
            (
                (rid, r.snapshot)
                for rid, r in self._replicas.items()
                if r.up and r.snapshot is not None
            ),
            cluster,
        )

    def frame(self, service: str, t_unix_ms: int) -> ServiceFrame:
        """The frame of `service` from the replicas that are up and the last pod facts."""
        target = self.config.services[service]
        merged = merge(r.rates for r in self._replicas.values() if r.up)
        endpoints = [rates for (cluster, _), rates in merged.items() if cluster == target.cluster]
        pods = self._pods.get(target.deployment, [])
        frame = build_frame(
            service,
            t_unix_ms,
            endpoints,
            pods,
            self.replica_frames(),
            pod_rates=self._scraper.rates,
            windows=self._windows[service],
            policy=self.policy(target.cluster),
            colors=self._colors[service],
            usage_note=getattr(self._platform, "usage_note", None),
            xds=self.xds(target.cluster),
            retries_s=self.retries_s(target.cluster),
        )
        oom_s = oom_seconds(self.memory.forecasts(target.deployment))
        for pod in frame["pods"]:
            if pod["pod"] in oom_s:
                pod["oom_s"] = oom_s[pod["pod"]]
        _, at_pods, bypassing = self._windows[service]
        shares = window_shares(at_pods.means(), bypassing.means())
        pinning = pinning_frame(frame, self.pinning.connections, shares)
        if any(p["bypass_share"] is not None or "conns" in p for p in pinning["pods"]):
            frame["pinning"] = slim(pinning)
        return frame

    def whose(self) -> Whose:
        """What tells the pods' connections apart (pinning/), from the up replicas'
        snapshots: the local addresses of their upstream connections to their endpoints,
        whether those name every connection their engines hold, and the hosts of the
        proxyless clients subscribed to their clusters."""
        addresses: set[str] = set()
        xds_hosts: set[str] = set()
        seen = [r for r in self._replicas.values() if r.up and r.snapshot is not None]
        complete = bool(seen)  # no replica seen: Ballast's connections are not known
        for replica in seen:
            if replica.snapshot is not None:
                complete = complete and replica.snapshot.upstream_addresses_complete
                for cluster in replica.snapshot.clusters:
                    xds_hosts.update(host_of(peer) for peer in cluster.xds_client_peers)
                    for ep in cluster.endpoints:
                        addresses.update(ep.upstream_local_addresses)
        return Whose(addresses, complete, xds_hosts)

    async def read_channelz(self) -> None:
        """Reads the client connections of every pod last listed (pinning/)."""
        pods = [pod for pods in self._pods.values() for pod in pods]
        await self.pinning.read(pods, self.whose())

    async def _read_channelz(self) -> None:
        await asyncio.sleep(FIRST_READ_S)  # the pods are listed by then
        # A pod's answer never raises; a pass that does is a bug here, logged.
        await every(
            READ_INTERVAL_S,
            self.read_channelz,
            log,
            "reading the pods' channelz failed; trying again",
        )

    def retries_s(self, cluster: str) -> float:
        """The cluster's retries/s added up over the replicas that are up."""
        return sum(r.retry_rates.get(cluster, 0.0) for r in self._replicas.values() if r.up)

    async def tick(self) -> None:
        """Builds, keeps and publishes one frame per service; a failed publish is logged."""
        t_unix_ms = int(self._clock() * 1000)
        for service in self.config.services:
            frame = self.frame(service, t_unix_ms)
            self.history.append(frame)
            try:
                await self._publish(frame)
            except Exception as err:
                self._publish_failed(service, err)
            else:
                if self._publish_error is not None:
                    log.warning("publishing frames works again (%s)", service)
                    self._publish_error = None

    def _publish_failed(self, service: str, err: Exception) -> None:
        error = f"{type(err).__name__}: {err}"
        if error == self._publish_error:
            log.debug("publishing the frame of %s failed again: %s", service, error)
            return
        self._publish_error = error
        log.warning(
            "publishing the frame of %s failed (%s); the page history still keeps it;"
            " each tick tries again, and this is logged once until it works",
            service, error,
        )  # fmt: skip

    async def _tick_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.config.interval_s
            # A slow tick skips the missed slots rather than sending a burst to catch up.
            next_at = max(next_at, loop.time())
            await asyncio.sleep(next_at - loop.time())
            await self.tick()

    async def _watch(self, replica: _Replica) -> None:
        attempt = 0
        last_error = ""
        while True:
            try:
                await self._follow(replica)
                error = "ended its snapshot stream"
            except grpc.aio.AioRpcError as err:
                error = f"at {replica.target.address}: {err.code().name} {err.details()}"
            except TimeoutError:
                error = "sent no snapshot in time"
            except Exception:
                log.exception("balancer %s: the snapshot stream failed", replica.target.id)
                error = ""
            if replica.up:
                attempt = 0  # it was connected: start the backoff again from the first step
                last_error = ""
            # Tried every second while down: the same failure again is not news.
            level = logging.DEBUG if error and error == last_error else logging.WARNING
            if error:
                log.log(level, "balancer %s %s", replica.target.id, error)
            last_error = error
            replica.mark_down()
            await asyncio.sleep(self.retry_delay_s(attempt))
            attempt += 1

    async def _follow(self, replica: _Replica) -> None:
        """Reads the replica's stream until it ends; raises what broke it."""
        target = replica.target
        stall_s = max(STALL_MIN_S, STALL_INTERVALS * self.config.interval_s)
        request = admin_pb2.WatchSnapshotsRequest(interval_ms=self.config.interval_ms)
        metadata = (("authorization", f"Bearer {target.token}"),)
        async with open_channel(target.address, target.tls) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
            call = stub.WatchSnapshots(request, metadata=metadata)
            try:
                while True:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                    # cancellation that lands as read() completes, and stop() then hangs.
                    async with asyncio.timeout(stall_s):
                        snapshot = await call.read()
                    if snapshot is grpc.aio.EOF:
                        return
                    if not replica.up:
                        log.info("balancer %s at %s is up", target.id, target.address)
                    replica.observe(snapshot)
            finally:
                call.cancel()

    def retry_delay_s(self, attempt: int) -> float:
        """The wait before retry `attempt` of a down replica: the step ± jitter, at most
        MAX_BACKOFF_S."""
        jittered = self.config.backoff_step_s(attempt) * self._rng.uniform(1 - JITTER, 1 + JITTER)
        return min(MAX_BACKOFF_S, jittered)

    async def _poll_pods(self) -> None:
        interval_s = max(self.config.pods_interval_s, self.config.interval_s)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            await self.poll_pods()
            await self.scrape_pods()
            # Keep the cadence: a round's own time (a scrape can take its 1 s timeout)
            # does not stretch the interval, and a slow round skips rather than bursts.
            next_at = max(next_at + interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def scrape_pods(self) -> None:
        """Scrapes the /metrics of every pod last listed; a failing pod only loses its figures."""
        await self._scraper.scrape(pod for pods in self._pods.values() for pod in pods)

    async def poll_pods(self) -> None:
        """Refreshes every service's pod facts; a failed call keeps the last ones and is logged."""
        if self._platform is None:
            return
        for deployment in {t.deployment for t in self.config.services.values()}:
            try:
                self._pods[deployment] = await self._platform.list_pods(deployment)
                self.memory.observe(deployment, self._pods[deployment], self._clock())
            except UnknownDeployment:
                self._pods[deployment] = []
            except Exception:
                log.exception("listing the pods of %s failed; trying again", deployment)
