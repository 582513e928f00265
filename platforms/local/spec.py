"""What a local Deployment runs: typed, frozen, validated specs.

A `DeploymentSpec` is the local platform's Deployment and pod template in one:
the command of its pods (with `{port}`, `{metrics_port}` and `{name}` filled in
per pod), their environment, memory limit, termination grace period, readiness
probe and crash backoff. Each dataclass validates itself in `__post_init__` and
raises ValueError naming the field.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

PLACEHOLDERS = ("port", "metrics_port", "name")
# Room for "-<hash5>-<suffix5>" within a 63-character DNS label.
MAX_NAME_CHARS = 51
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _not_negative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be 0 or a positive number, got {value!r}")


def _count(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")


@dataclass(frozen=True)
class ProbeSpec:
    """A gRPC readiness probe (grpc.health.v1 Check), with Kubernetes' thresholds.

    A pod becomes ready after `success_threshold` passes in a row and unready
    after `failure_threshold` failures in a row. `service` is the name asked
    for in the Check request ("" = the whole server).
    """

    interval_s: float = 1.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    service: str = ""

    def __post_init__(self) -> None:
        _positive("probe.interval_s", self.interval_s)
        _positive("probe.timeout_s", self.timeout_s)
        _count("probe.success_threshold", self.success_threshold, 1)
        _count("probe.failure_threshold", self.failure_threshold, 1)


@dataclass(frozen=True)
class BackoffSpec:
    """Delay before a crashed pod is replaced, as the kubelet's CrashLoopBackOff.

    The first replacement is immediate; each further crash in a row waits
    `initial_s`, then twice as long each time, at most `max_s`. A pod that ran
    for `reset_after_s` before it crashed starts the sequence again. Kubernetes
    uses 10 s, 300 s and 600 s; the local defaults are shorter for a laptop demo.
    """

    initial_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        _not_negative("backoff.initial_s", self.initial_s)
        _not_negative("backoff.max_s", self.max_s)
        if self.max_s < self.initial_s:
            raise ValueError("backoff.max_s must be at least backoff.initial_s")
        _positive("backoff.reset_after_s", self.reset_after_s)

    def delay_s(self, crashes_in_a_row: int) -> float:
        """The wait before replacing a pod after its `crashes_in_a_row`-th crash (1-based)."""
        if crashes_in_a_row <= 1:
            return 0.0
        return float(min(self.initial_s * 2 ** (crashes_in_a_row - 2), self.max_s))


@dataclass(frozen=True)
class DeploymentSpec:
    """A Deployment of `replicas` pods running `argv`; also the Service of the same name.

    `argv` may use `{port}` (the pod's gRPC port), `{metrics_port}` and `{name}`
    (the pod's name); each pod gets its own free 127.0.0.1 ports. A pod's
    environment is `env` over a few basics (PATH, HOME, locale: see
    `environment.py`), never this process's whole environment.
    `memory_limit_bytes` None means no limit. `progress_deadline_s` bounds how
    long a rollout waits for one new pod to become ready.
    """

    name: str
    argv: tuple[str, ...]
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    cwd: Path | None = None
    memory_limit_bytes: int | None = None
    termination_grace_s: float = 30.0
    probe: ProbeSpec = ProbeSpec()
    backoff: BackoffSpec = BackoffSpec()
    progress_deadline_s: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _DNS_LABEL.match(self.name):
            raise ValueError(
                f"name {self.name!r} must be lower-case letters, digits and '-',"
                " starting and ending with a letter or digit"
            )
        if len(self.name) > MAX_NAME_CHARS:
            raise ValueError(f"name {self.name!r} is longer than {MAX_NAME_CHARS} characters")
        _count("replicas", self.replicas, 0)
        object.__setattr__(self, "argv", tuple(self.argv))
        _check_argv(self.argv)
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        _check_env(self.env)
        if self.memory_limit_bytes is not None:
            _count("memory_limit_bytes", self.memory_limit_bytes, 1)
        _not_negative("termination_grace_s", self.termination_grace_s)
        _positive("progress_deadline_s", self.progress_deadline_s)

    @property
    def uses_metrics_port(self) -> bool:
        return any("{metrics_port}" in arg for arg in self.argv)


def _check_argv(argv: tuple[str, ...]) -> None:
    if not argv or not all(isinstance(arg, str) for arg in argv):
        raise ValueError("argv must be a non-empty sequence of strings")
    for arg in argv:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(arg)]
        except ValueError as err:
            raise ValueError(f"argv {arg!r}: {err}") from None
        for field_name in fields:
            if field_name is not None and field_name not in PLACEHOLDERS:
                known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
                raise ValueError(
                    f"argv {arg!r}: unknown placeholder {{{field_name}}}; use {known}"
                    " (double the braces for a literal one)"
                )


def _check_env(env: Mapping[str, str]) -> None:
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key:
            raise ValueError(f"env: {key!r} is not a variable name")
        if not isinstance(value, str):
            raise ValueError(f"env {key}: the value must be a string, got {value!r}")
