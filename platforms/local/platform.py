"""`LocalPlatform`: Deployments of pods that are processes on this machine.

Embeddable asyncio supervisor implementing `platforms.base.Platform`. The
caller owns its life: `await start()` ... `await stop()` (or `async with`).
Every pod is stopped by `stop()`, and none outlives this process even when it
is killed (see `processes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from balancer.discovery import Update
from platforms.base import Platform, PlatformError, PodFacts, UnknownDeployment, UnknownPod
from platforms.local.deployment import Deployment
from platforms.local.events import EndpointWatchers, EventLog, PodEvent
from platforms.local.naming import Ports
from platforms.local.spec import DeploymentSpec

log = logging.getLogger(__name__)


class LocalPlatform:
    """Runs `specs` as local Deployments; also the Service of each one's name.

    `clock` gives Unix seconds for pod facts and events; `rng` draws pod names
    (seed it for repeatable names); usage is sampled every `sample_interval_s`,
    which is also how late a pod over its memory limit may be killed. Pod output
    goes to `<log_dir>/<pod>.log` when `log_dir` is given, else nowhere.
    """

    def __init__(
        self,
        specs: Sequence[DeploymentSpec],
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sample_interval_s: float = 1.0,
        log_dir: Path | None = None,
        host: str = "127.0.0.1",
        on_event: Callable[[PodEvent], None] | None = None,
    ) -> None:
        names = [spec.name for spec in specs]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise ValueError(f"deployment names must be unique: {', '.join(duplicates)}")
        if not sample_interval_s > 0:
            raise ValueError(f"sample_interval_s must be positive, got {sample_interval_s!r}")
        self._sample_interval_s = sample_interval_s
        self._log_dir = log_dir
        self._log = EventLog(clock, on_event=on_event)
        self._watchers = EndpointWatchers()
        deployment = functools.partial(
            Deployment,
            events=self._log,
            watchers=self._watchers,
            ports=Ports(host),
            clock=clock,
            rng=rng or random.Random(),
            used_names=set(),  # shared: a pod name is never used twice
            log_dir=log_dir,
        )
        self._deployments = {spec.name: deployment(spec) for spec in specs}
        self._sampler: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LocalPlatform:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Starts every deployment's pods; returns once their processes exist (not yet ready)."""
        if self._sampler is not None:
            raise PlatformError("a local platform starts once: start() was already called")
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        self._sampler = asyncio.get_running_loop().create_task(self._sample_forever())
        try:
            await asyncio.gather(*(d.start() for d in self._deployments.values()))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stops every pod (SIGTERM, grace period, SIGKILL) and ends the watches.

        Returns once every pod process is reaped. Safe to call more than once.
        """
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        await asyncio.gather(*(d.stop() for d in self._deployments.values()))
        self._watchers.close()

    async def _sample_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for deployment in self._deployments.values():
                try:
                    deployment.sample(loop.time())
                except Exception:  # a sampling bug must not end the memory limits
                    log.exception("sampling the pods of %s failed", deployment.name)
            await asyncio.sleep(self._sample_interval_s)

    def _deployment(self, name: str) -> Deployment:
        try:
            return self._deployments[name]
        except KeyError:
            raise UnknownDeployment(name) from None

    # platforms.base.Platform

    def watch_endpoints(self, service: str) -> AsyncIterator[Update]:
        """A Reset of the pods whose process runs (ready or not), then Add on start and
        on readiness changes, Remove when a pod's process ends. Raises UnknownDeployment."""
        deployment = self._deployment(service)
        return self._watchers.watch(service, deployment.addresses)

    async def list_pods(self, deployment: str) -> list[PodFacts]:
        """The deployment's pods, oldest first, a crashed one until it is replaced."""
        return self._deployment(deployment).facts()

    async def restart_pod(self, name: str) -> None:
        """Stops the pod (SIGTERM, grace, SIGKILL), then starts its replacement in its slot
        (new name, the slot's restart count + 1). Raises UnknownPod."""
        for deployment in self._deployments.values():
            if deployment.find(name) is not None:
                await deployment.restart_pod(name)
                return
        raise UnknownPod(name)

    async def rollout_restart(self, deployment: str) -> None:
        await self._deployment(deployment).rollout_restart()

    async def scale(self, deployment: str, replicas: int) -> None:
        await self._deployment(deployment).scale(replicas)

    # Beyond the interface: for the demo, tests and the CLI.

    def events(self) -> tuple[PodEvent, ...]:
        """The latest events (at most 1000), oldest first."""
        return self._log.snapshot()

    def pod_pid(self, name: str) -> int | None:
        """The process id of a pod whose process runs; None otherwise (or if unknown)."""
        for deployment in self._deployments.values():
            pod = deployment.find(name)
            if pod is not None and pod.running:
                return pod.pid
        return None

    async def wait_ready(self, deployment: str, timeout_s: float) -> None:
        """Returns once the deployment has its replicas, all ready; raises TimeoutError."""
        target = self._deployment(deployment)
        await target.wait_until(target.all_ready, timeout_s)


if TYPE_CHECKING:
    _implements: type[Platform] = LocalPlatform  # mypy checks the interface here
