"""The auto-weights controller: every `interval_s`, for each service whose autoweights are
on (and automation not paused), each READY pod's weight from its load (`autoweights`).

It runs beside the collector and the reconciler (`ControlPlane`), reading the frames the
collector keeps: per pod over the last `window_s` the mean calls/s (the pod's own count
when it reports one — its CPU serves every client —, else the balancers' and proxyless
clients'), errors/s and CPU cores (the platform's pod facts). It writes the weights it
gives as `AutoWeight` rows, each audited with its reason; the reconciler sends them to
the replicas like any desired state. Pods with an operator weight are left out (the
override wins) and so are pods not READY. Nothing is written while the service's
autoweights are off or automation is paused, and what it learnt is forgotten then.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from asgiref.sync import sync_to_async

from balancer.endpoint import DEFAULT_WEIGHT
from balancer.lifecycle import OneTask, every
from dashboard.collector.runner import Collector
from dashboard.control import automation
from dashboard.control.autoweights import AutoWeights, AutoWeightsConfig, Decision, PodLoad
from dashboard.control.desired import configured

log = logging.getLogger(__name__)

INTERVAL_S = 2.0  # the platform's pod facts come every 2 s: sooner sees nothing new
# The load is the mean over this long. CPU comes in 10 ms ticks, sampled over 1 s every
# 2 s: a pod using 0.05 cores reads ±40 % per sample, and on a busy node the CPU a call
# costs wanders too. The ratio it weighs by (calls per core) does not depend on the weight
# the pod had meanwhile, so a long window adds no lag to the loop, only calm: with 30 s
# the weights of equal pods still wandered by ±9 % on a busy machine (load 20 on 2 cores).
WINDOW_S = 60.0


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _qps(p: dict[str, Any]) -> tuple[float | None, float | None]:
    """A pod's calls/s and errors/s in one frame: its own count (every client's calls
    cost it CPU), else what Ballast and proxyless clients sent it."""
    if p.get("pod_rps") is not None:
        return p["pod_rps"], p.get("pod_err_s")
    if p.get("rps") is None:
        return None, None
    return p["rps"] + p.get("px_rps", 0.0), p.get("err_s")


def pod_loads(frames: Sequence[dict[str, Any]], skip: Iterable[str] = ()) -> list[PodLoad]:
    """The load of each pod READY in the newest of `frames` (oldest first), but `skip`,
    as the means over the frames it is in."""
    if not frames:
        return []
    skipped = set(skip)
    ready = [p["pod"] for p in frames[-1].get("pods", []) if p.get("state") == "READY"]
    seen: dict[str, list[dict[str, Any]]] = {pod: [] for pod in ready if pod not in skipped}
    for frame in frames:
        for p in frame.get("pods", []):
            if p["pod"] in seen:
                seen[p["pod"]].append(p)
    loads = []
    for pod, ps in seen.items():
        rates = [_qps(p) for p in ps]
        cores = _mean(p["cpu_m"] / 1000 if p.get("cpu_m") is not None else None for p in ps)
        loads.append(PodLoad(pod, _mean(q for q, _ in rates), _mean(e for _, e in rates), cores))
    return loads


class AutoWeighter(OneTask):
    """Runs the controller every `interval_s` beside `collector`: `start()`, `stop()`.

    `clock` gives the seconds blackout and expiry are measured in.
    """

    task_name = "auto-weights controller"

    def __init__(
        self,
        collector: Collector,
        *,
        interval_s: float = INTERVAL_S,
        window_s: float = WINDOW_S,
        config: AutoWeightsConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.collector = collector
        self.interval_s = interval_s
        self.window_s = window_s
        self.config = config or AutoWeightsConfig()
        self._clock = clock
        self._state: dict[str, AutoWeights] = {}

    async def _run(self) -> None:
        await every(
            self.interval_s,
            self.run_once,
            log,
            "an auto-weights pass failed; the next one tries again",
        )

    async def run_once(self) -> int:
        """One pass over every service; returns how many weights it gave or dropped."""
        inputs = await sync_to_async(automation.controller_inputs)()
        given = 0
        for service in self.collector.config.services:
            if service not in inputs:
                self._state.pop(service, None)  # off or paused: start afresh when back on
                continue
            given += await self._service(service, inputs[service])
        return given

    async def _service(self, service: str, inputs: automation.ServiceInputs) -> int:
        frames = self._frames(service)
        if not frames or not frames[-1].get("pods"):
            return 0  # no replica up: nothing to judge, nothing to forget
        loads = pod_loads(frames, skip=inputs.overridden)
        state = self._state.setdefault(service, AutoWeights(self.config))
        decisions = state.step(loads, inputs.current, self._default_weight(service), self._clock())
        present = [p["pod"] for p in frames[-1]["pods"]]
        given = await sync_to_async(automation.save_decisions)(service, decisions, present)
        self._log(service, [d for d in decisions if d.changed])
        return given

    def _frames(self, service: str) -> list[dict[str, Any]]:
        """The service's frames of the last `window_s`, oldest first."""
        count = max(1, round(self.window_s / self.collector.config.interval_s))
        return [json.loads(f) for f in self.collector.history.latest(service, count)]

    def _default_weight(self, service: str) -> int:
        """The cluster's configured default weight, as the first replica up reports it."""
        cluster = self.collector.config.services[service].cluster
        for snapshot in self.collector.snapshots().values():
            found = configured(snapshot, cluster)
            if found is not None:
                return found[0]
        return DEFAULT_WEIGHT

    @staticmethod
    def _log(service: str, changed: Sequence[Decision]) -> None:
        for d in changed:
            log.info("auto weight of %s: %s", service, d.reason)
