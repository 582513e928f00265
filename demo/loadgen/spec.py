"""What one load client does: its target, rate, method mix and call shapes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

Method = Literal["unary", "server_stream", "client_stream", "bidi"]
METHODS: tuple[Method, ...] = get_args(Method)
DEFAULT_MIX: Mapping[Method, float] = {"unary": 1.0}


@dataclass(frozen=True)
class ClientSpec:
    """One client service: one long-lived channel to `target`, calls at `rate_per_s`.

    `mix` weighs the four methods (weights need not sum to 1; a missing method
    is never called). `payload_bytes` is the size of each item a client-stream
    or bidi call sends, and of the payload a unary call asks back.
    `stream_messages` is the number of items of every streaming call (server,
    client and bidi), `stream_interval_ms` the server stream's pace.
    `max_in_flight` caps calls waiting for an answer: a tick that finds it
    reached sends nothing and counts as skipped, so a stalled target cannot
    pile up calls without bound.
    """

    name: str
    target: str
    rate_per_s: float
    mix: Mapping[Method, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    deadline_s: float = 5.0
    payload_bytes: int = 64
    stream_messages: int = 5
    stream_interval_ms: int = 0
    max_in_flight: int = 100

    def __post_init__(self) -> None:
        if not self.name or not self.target:
            raise ValueError("a client needs a name and a target (host:port)")
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s > 0):
            raise ValueError(f"client {self.name}: rate_per_s must be > 0, got {self.rate_per_s}")
        check_mix(self.mix)
        if not self.deadline_s > 0:
            raise ValueError(f"client {self.name}: deadline_s must be > 0")
        if self.payload_bytes < 0 or self.stream_interval_ms < 0:
            raise ValueError(f"client {self.name}: payload_bytes, stream_interval_ms must be >= 0")
        if self.stream_messages < 1 or self.max_in_flight < 1:
            raise ValueError(f"client {self.name}: stream_messages, max_in_flight must be >= 1")


def check_mix(mix: Mapping[Any, float]) -> Mapping[Method, float]:
    """Returns `mix` when its keys are method names and its weights >= 0 with a positive sum.

    Raises ValueError naming the problem otherwise.
    """
    unknown = sorted(set(mix) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; use {', '.join(METHODS)}")
    weights = list(mix.values())
    if any(not (math.isfinite(w) and w >= 0) for w in weights) or not sum(weights) > 0:
        raise ValueError(f"mix weights must be >= 0 with a positive sum, got {dict(mix)}")
    return cast(Mapping[Method, float], dict(mix))  # every key checked above


def parse_mix(text: str) -> Mapping[Method, float]:
    """`unary=8,server_stream=1,bidi=1` → {"unary": 8.0, ...}; raises ValueError when malformed."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        if not sep:
            raise ValueError(f"mix entry {part!r} is not method=weight")
        try:
            mix[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"mix entry {part!r}: weight is not a number") from None
    return check_mix(mix)
