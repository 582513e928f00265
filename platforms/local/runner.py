"""Runs the pods of one deployment, as the kubelet runs containers.

It starts a pod's process, probes its readiness, samples its usage, enforces
the memory limit, stops it when asked and notices when it ends. What to do
about an end (replace the pod, and when) is the deployment's business: the
runner calls `on_exit(pod)` once per pod, after all its bookkeeping is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from platforms.local import processes
from platforms.local.environment import pod_environment
from platforms.local.events import EndpointWatchers, EventLog
from platforms.local.pod import COMPLETED, ERROR, OOM_KILLED, Pod, Termination
from platforms.local.probe import ReadinessProbe
from platforms.local.resources import UsageMeter
from platforms.local.spec import DeploymentSpec

log = logging.getLogger(__name__)

START_ERROR = "StartError"
START_ERROR_EXIT_CODE = 128  # what Kubernetes reports when a container cannot start
# Between a pod turning not-ready and its SIGTERM: time for the news to reach whoever routes
# to it (a balancer, HAProxy over its runtime API), as a preStop sleep gives on Kubernetes.
# Without it a call routed in that instant meets a server already stopping.
ENDPOINT_PROPAGATION_S = 0.2


class PodRunner:
    """Runs pods of `spec`. `on_exit` hears of every end, `on_change` of every readiness flip."""

    def __init__(
        self,
        spec: DeploymentSpec,
        *,
        events: EventLog,
        watchers: EndpointWatchers,
        clock: Callable[[], float],
        on_exit: Callable[[Pod], None],
        on_change: Callable[[], None],
        log_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self._events = events
        self._watchers = watchers
        self._clock = clock
        self._on_exit = on_exit
        self._on_change = on_change
        self._log_dir = log_dir

    async def start(self, pod: Pod) -> None:
        """Starts the pod's process, probe and watch; returns once the process exists.

        A process that cannot be started at all ends the pod at once as StartError.
        """
        try:
            with self._log_file(pod) as output:
                pod.process = await processes.spawn(
                    self._argv(pod),
                    env=pod_environment(pod.name, self.spec.env),
                    cwd=self.spec.cwd,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                )
        except OSError as err:
            log.warning("pod %s could not start: %s", pod.name, err)
            self._ended(pod, START_ERROR, START_ERROR_EXIT_CODE)
            return
        pod.started_at_s = self._clock()
        pod.meter = UsageMeter.of(pod.process.pid)
        self._events.record(self.spec.name, pod.name, "Started", f"pid {pod.process.pid}")
        self._watchers.added(self.spec.name, pod.address)
        loop = asyncio.get_running_loop()
        pod.tasks.append(loop.create_task(self._watch(pod)))
        pod.tasks.append(loop.create_task(self._probe(pod)))

    def _argv(self, pod: Pod) -> list[str]:
        values = {"port": pod.port, "metrics_port": pod.metrics_port or 0, "name": pod.name}
        return [arg.format(**values) for arg in self.spec.argv]

    def _log_file(self, pod: Pod) -> contextlib.AbstractContextManager[IO[Any] | int]:
        """The pod's stdout and stderr: `<log dir>/<pod>.log`, or nowhere without a log dir."""
        if self._log_dir is None:
            return contextlib.nullcontext(asyncio.subprocess.DEVNULL)
        return (self._log_dir / f"{pod.name}.log").open("ab")

    async def _probe(self, pod: Pod) -> None:
        probe = ReadinessProbe(
            pod.address.target, self.spec.probe, lambda ready: self._readiness(pod, ready)
        )
        await probe.run()

    def _readiness(self, pod: Pod, ready: bool) -> None:
        if pod.stopping is not None or not pod.running:
            return  # a pod on its way out stays unready
        pod.ready = ready
        if ready and pod.phase == "Pending":
            pod.phase = "Running"
        self._events.record(self.spec.name, pod.name, "Ready" if ready else "Unready")
        self._watchers.added(self.spec.name, pod.address)
        self._on_change()

    async def _watch(self, pod: Pod) -> None:
        assert pod.process is not None
        returncode = await pod.process.wait()
        processes.kill_group(pod.process)  # whatever it started dies with it
        code = processes.exit_code(returncode)
        reason = pod.kill_reason or (COMPLETED if code == 0 else ERROR)
        self._ended(pod, reason, code)

    def _ended(self, pod: Pod, reason: str, exit_code: int) -> None:
        for task in pod.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        was_started = pod.started_at_s is not None
        pod.ready = False
        pod.termination = Termination(reason, exit_code, self._clock())
        pod.phase = "Succeeded" if exit_code == 0 else "Failed"
        pod.cpu_millicores = pod.memory_bytes = None  # it uses nothing any more
        self._events.record(self.spec.name, pod.name, "Exited", f"{reason}, exit code {exit_code}")
        if was_started:
            self._watchers.removed(self.spec.name, pod.name)
        pod.exited.set()
        self._on_exit(pod)
        self._on_change()

    async def stop(self, pod: Pod, why: str) -> None:
        """Ends `pod` on purpose (not a crash): unready at once, SIGTERM, grace, SIGKILL.

        Returns once the pod's end is fully recorded. A pod already ended is left as is.
        """
        if pod.stopping is None:
            pod.stopping = why
        if pod.running:
            assert pod.process is not None
            self._events.record(self.spec.name, pod.name, "Killing", why)
            if pod.ready:
                # As an endpoint turns not-ready when its pod starts terminating.
                pod.ready = False
                self._watchers.added(self.spec.name, pod.address)
                await asyncio.sleep(ENDPOINT_PROPAGATION_S)
            await processes.terminate(pod.process, self.spec.termination_grace_s)
        if pod.process is not None or pod.termination is not None:
            await pod.exited.wait()
        # The probe closes its channel as it ends: done before we return.
        await asyncio.gather(*pod.tasks, return_exceptions=True)

    def sample(self, pod: Pod, now_s: float) -> None:
        """Measures `pod` and kills it, as the kernel would, when it is over its memory limit."""
        if pod.meter is None or not pod.running:
            return
        usage = pod.meter.sample(now_s)
        if usage is None:
            return
        pod.cpu_millicores = usage.cpu_millicores
        pod.memory_bytes = usage.memory_bytes
        limit = self.spec.memory_limit_bytes
        if limit is not None and usage.memory_bytes > limit and pod.kill_reason is None:
            self._oom_kill(pod, usage.memory_bytes, limit)

    def _oom_kill(self, pod: Pod, memory_bytes: int, limit: int) -> None:
        assert pod.process is not None
        pod.kill_reason = OOM_KILLED
        detail = f"{OOM_KILLED}: {memory_bytes} bytes resident, limit {limit}"
        self._events.record(self.spec.name, pod.name, "Killing", detail)
        processes.kill_group(pod.process)
        log.info("pod %s killed: %s", pod.name, detail)
