"""CPU and memory of one pod, measured with psutil.

A pod is its process and everything it started, as a container's cgroup
holds them: memory is the sum of resident sets, CPU the sum of CPU time
(children the pod already reaped included) over the wall time between two
samples. CPU time comes in clock ticks, so a rate over a short interval is
coarse (10 ms of CPU in 0.2 s reads as 50 millicores).

The kernel's OOM killer looks at the cgroup's working set; the sum of resident
sets is the closest a process tree offers (shared pages count once per
process, so it errs on the high side).
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]  # psutil ships no type information


@dataclass(frozen=True)
class Usage:
    """One sample. `cpu_millicores` is None on the first one (a rate needs two)."""

    cpu_millicores: float | None
    memory_bytes: int


class UsageMeter:
    """Samples one pod. Use it only while the pod's process has not been reaped."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self._last: tuple[float, float] | None = None  # (monotonic s, cpu s)

    @classmethod
    def of(cls, pid: int) -> UsageMeter | None:
        """A meter for process `pid`; None if it is already gone."""
        try:
            return cls(psutil.Process(pid))
        except psutil.Error:
            return None

    def sample(self, now_s: float) -> Usage | None:
        """The pod's usage at `now_s` (a monotonic clock); None if its process is gone."""
        try:
            cpu_s, memory_bytes = self._totals()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        cpu_millicores = None
        if self._last is not None and now_s > self._last[0]:
            # A descendant that exits unreaped takes its CPU time along: never below 0.
            used_s = max(0.0, cpu_s - self._last[1])
            cpu_millicores = 1000.0 * used_s / (now_s - self._last[0])
        self._last = (now_s, cpu_s)
        return Usage(cpu_millicores, memory_bytes)

    def _totals(self) -> tuple[float, int]:
        times = self._process.cpu_times()
        cpu_s = float(times.user + times.system + times.children_user + times.children_system)
        memory_bytes = int(self._process.memory_info().rss)
        for child in self._process.children(recursive=True):
            try:
                child_times = child.cpu_times()
                memory_bytes += int(child.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # it exited between the listing and the reading
            cpu_s += float(child_times.user + child_times.system)
        return cpu_s, memory_bytes
