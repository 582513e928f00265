"""The workload's knobs: one frozen, validated value shared by the CLI, the environment and the
Knobs gRPC service.

Precedence, lowest first: the defaults here, the environment (`BALLAST_KNOB_*`, how a platform
sets knobs for every pod of a deployment), the command line (one pod), then `Knobs.Set` at run
time. Every way in validates through `Knobs.__post_init__`, so a bad value reads the same
wherever it came from.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from demo.v1 import workload_pb2 as pb

# Status codes a failure may use: every code but OK (a "failure" with OK would not fail).
ERROR_CODES = tuple(code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK)

# The environment variable of each knob; `python -m demo.workload --help` lists them too.
ENV_PREFIX = "BALLAST_KNOB_"


class KnobError(ValueError):
    """A bad knob value; the message names the knob (or variable) and says what is allowed."""


def check_status_name(name: str) -> str:
    """Returns `name` when it names a grpc.StatusCode other than OK; raises KnobError."""
    if name not in ERROR_CODES:
        allowed = ", ".join(ERROR_CODES)
        raise KnobError(
            f"error_code must be a gRPC status code other than OK ({allowed}); got {name!r}"
        )
    return name


def _non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise KnobError(f"{name} must be a finite number ≥ 0, got {value}")


@dataclass(frozen=True)
class Knobs:
    """How the pod misbehaves on every call it serves (see `behaviour.Misbehaviour`).

    `latency_ms` plus a uniform jitter in [0, `jitter_ms`) of waiting, `cpu_ms` of CPU time
    burnt, `leak_bytes` of memory kept forever; then a share `error_rate` (0..1) of calls fails
    with `error_code`.
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    cpu_ms: float = 0.0
    leak_bytes: int = 0
    error_rate: float = 0.0
    error_code: str = "UNAVAILABLE"

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms", "cpu_ms"):
            _non_negative(name, getattr(self, name))
        if isinstance(self.leak_bytes, bool) or not isinstance(self.leak_bytes, int):
            raise KnobError(f"leak_bytes must be an integer, got {self.leak_bytes!r}")
        if self.leak_bytes < 0:
            raise KnobError(f"leak_bytes must be ≥ 0, got {self.leak_bytes}")
        if not (math.isfinite(self.error_rate) and 0 <= self.error_rate <= 1):
            raise KnobError(f"error_rate must be between 0 and 1, got {self.error_rate}")
        check_status_name(self.error_code)

    @property
    def status_code(self) -> grpc.StatusCode:
        return grpc.StatusCode[self.error_code]

    def changed(self, **changes: Any) -> Knobs:
        """A copy with `changes` applied and validated; raises KnobError."""
        try:
            return dataclasses.replace(self, **changes)
        except TypeError as err:  # an unknown knob name
            raise KnobError(str(err)) from None

    def to_proto(self) -> pb.KnobSettings:
        return pb.KnobSettings(**dataclasses.asdict(self))


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Knobs))


def env_name(knob: str) -> str:
    """`latency_ms` → `BALLAST_KNOB_LATENCY_MS`."""
    return ENV_PREFIX + knob.upper()


def changes_from_proto(settings: pb.KnobSettings) -> dict[str, Any]:
    """The knobs present in `settings` (proto3 `optional`: absent fields are not changes)."""
    return {name: getattr(settings, name) for name in FIELDS if settings.HasField(name)}


def knobs_from_env(env: Mapping[str, str], base: Knobs | None = None) -> Knobs:
    """`base` (default: the defaults) with the `BALLAST_KNOB_*` variables set in `env` applied.

    Raises KnobError naming the variable when a value does not parse or is out of range.
    """
    knobs = Knobs() if base is None else base
    for field in dataclasses.fields(Knobs):
        variable = env_name(field.name)
        if (raw := env.get(variable, "").strip()) == "":
            continue
        try:
            knobs = knobs.changed(**{field.name: _parse(field.name, raw)})
        except KnobError as err:
            raise KnobError(f"{variable}={raw!r}: {err}") from None
    return knobs


def _parse(knob: str, raw: str) -> object:
    parse: type[Any] = {"leak_bytes": int, "error_code": str}.get(knob, float)
    try:
        return parse(raw)
    except ValueError:
        raise KnobError(f"not a valid {parse.__name__}") from None


async def set_knobs(address: str, settings: pb.KnobSettings, timeout_s: float = 5.0) -> None:
    """Changes a running pod's knobs (Knobs.Set, straight to the pod at `address`); fields
    left unset keep their values."""
    async with grpc.aio.insecure_channel(address) as channel:
        set_call = channel.unary_unary(
            "/ballast.demo.v1.Knobs/Set",
            request_serializer=pb.KnobSettings.SerializeToString,
            response_deserializer=pb.KnobSettings.FromString,
        )
        await set_call(settings, timeout=timeout_s)
